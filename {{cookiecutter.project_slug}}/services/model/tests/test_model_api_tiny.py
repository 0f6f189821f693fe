"""The transformers backend's HTTP surface, on a tiny random model (fast)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

ERROR_KEYS = {"message", "type", "param", "code"}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
NAMED_G = {"type": "function", "function": {"name": "g"}}
BAD_SCHEMA = {"type": "json_schema", "json_schema": {"schema": 3}}


def chat(content: str = "Hello", **fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **fields}


def sse_payloads(text: str) -> list[Any]:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def assert_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["code"] == status and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


async def test_chat_completion_has_openai_schema_and_exact_usage(tiny_service) -> None:
    response = await tiny_service.client.post(
        "/v1/chat/completions", json=chat(max_tokens=5, temperature=0, ignore_eos=True)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    engine = tiny_service.runtime.engine
    prompt_ids = engine.encode_chat([{"role": "user", "content": "Hello"}])
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 5,
        "total_tokens": len(prompt_ids) + 5,
    }


async def test_stream_joins_to_the_non_streamed_text(tiny_service) -> None:
    request = chat("Write a story", max_tokens=12, temperature=0, ignore_eos=True)
    whole = await tiny_service.client.post("/v1/chat/completions", json=request)
    streamed = await tiny_service.client.post(
        "/v1/chat/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = sse_payloads(streamed.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole.json()["usage"]


async def test_text_completion_and_token_id_prompt_agree(tiny_service) -> None:
    engine = tiny_service.runtime.engine
    ids = engine.encode_text("The capital of")
    by_text = await tiny_service.client.post(
        "/v1/completions",
        json={"prompt": "The capital of", "max_tokens": 6, "temperature": 0, "ignore_eos": True},
    )
    by_ids = await tiny_service.client.post(
        "/v1/completions",
        json={"prompt": ids, "max_tokens": 6, "temperature": 0, "ignore_eos": True},
    )
    assert by_text.status_code == by_ids.status_code == 200
    assert by_text.json()["object"] == "text_completion"
    assert by_text.json()["choices"][0]["text"] == by_ids.json()["choices"][0]["text"]
    assert by_text.json()["usage"]["prompt_tokens"] == len(ids)


async def test_same_seed_same_sample_in_any_batch(tiny_service) -> None:
    request = chat("Tell me", max_tokens=10, temperature=1.0, seed=1234, ignore_eos=True)
    first, second, _ = await asyncio.gather(
        tiny_service.client.post("/v1/chat/completions", json=request),
        tiny_service.client.post("/v1/chat/completions", json=request),
        tiny_service.client.post("/v1/chat/completions", json=chat(max_tokens=10)),
    )
    texts = [r.json()["choices"][0]["message"]["content"] for r in (first, second)]
    assert texts[0] == texts[1]


async def test_stop_string_ends_the_completion(tiny_service) -> None:
    request = chat("Hi", max_tokens=20, temperature=0, ignore_eos=True)
    free = await tiny_service.client.post("/v1/chat/completions", json=request)
    text = free.json()["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), f"generated text too short to pick a stop string: {text!r}"
    stopped = await tiny_service.client.post(
        "/v1/chat/completions", json={**request, "stop": [stop]}
    )
    choice = stopped.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == text[: text.index(stop)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(n=100), "n"),
        (chat(logprobs=True, top_logprobs=50), "top_logprobs"),
        (chat(logit_bias={"x": 1}), "logit_bias"),
        (chat(tool_choice="required"), "tool_choice"),
        (chat(response_format={"type": "json_schema"}), "response_format"),
        (chat(structured_outputs={"regex": "a", "choice": ["b"]}), "structured_outputs"),
        (chat(structured_outputs={"grammar": "root ::= x"}), "structured_outputs"),
        (chat(structured_outputs={"regex": "(unclosed"}), "structured_outputs"),
        (chat(structured_outputs={"choice": []}), "structured_outputs"),
        (chat(response_format=BAD_SCHEMA), "response_format"),
        (chat(response_format={"type": "yaml"}), "response_format"),
        (chat(tools=[{"type": "function", "function": {}}]), "tools"),
        (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": 1}}]), "tools"),
        (chat(tools=[WEATHER_TOOL], tool_choice=NAMED_G), "tool_choice"),
        (chat(tools=[WEATHER_TOOL], tool_choice="sometimes"), "tool_choice"),
        (chat(top_logprobs=2), "top_logprobs"),
        (chat(presence_penalty=3), "presence_penalty"),
        (chat(logit_bias={"5": 1000}), "logit_bias"),
        ({"model": "tiny", "prompt": "x", "echo": True, "logprobs": 1}, "echo (with logprobs)"),
        (chat(temperature=-1), "temperature"),
        (chat(max_tokens=0), "max_tokens"),
        ({"model": "tiny"}, "messages"),
        ({"model": "tiny", "messages": []}, "messages"),
        (chat("word " * 200), "input_tokens"),
        (chat(max_tokens=1000), "max_tokens"),
    ],
)
async def test_bad_requests_get_400_in_openai_shape(tiny_service, body, param) -> None:
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    response = await tiny_service.client.post(path, json=body)
    assert_error(response, 400, param)
    fine = await tiny_service.client.post("/v1/chat/completions", json=chat(max_tokens=2))
    assert fine.status_code == 200  # the service still answers


async def test_invalid_json_and_unknown_model_and_route(tiny_service) -> None:
    client = tiny_service.client
    invalid = await client.post(
        "/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(invalid, 400)
    assert_error(await client.post("/v1/chat/completions", json={**chat(), "model": "x"}), 404)
    assert_error(await client.get("/v1/nothing"), 404)
    assert_error(await client.post("/v1/embeddings", json={"input": "hi"}), 400)


async def test_models_health_and_vllm_metric_names(tiny_service) -> None:
    client = tiny_service.client
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == 128
    assert (await client.get("/health")).status_code == 200
    await client.post("/v1/chat/completions", json=chat(max_tokens=3))
    metrics = (await client.get("/metrics")).text
    for name in (
        'vllm:num_requests_running{engine="0",model_name="tiny"}',
        "vllm:num_requests_waiting{",
        "vllm:prompt_tokens_total{",
        "vllm:generation_tokens_total{",
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"}',
        "vllm:time_to_first_token_seconds_bucket{",
        "vllm:inter_token_latency_seconds_bucket{",
        "vllm:e2e_request_latency_seconds_bucket{",
    ):
        assert name in metrics, name


async def test_health_is_503_until_the_model_is_loaded(tiny_settings) -> None:
    from model_service.app import create_app

    app = create_app(tiny_settings())
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert_error(await c.get("/health"), 503)
        assert_error(await c.post("/v1/chat/completions", json=chat()), 503)
        app.state.runtime.load()
        assert (await c.get("/health")).status_code == 200
        app.state.runtime.close()


async def test_full_queue_answers_503_with_retry_after(tiny_service_factory) -> None:
    service = tiny_service_factory(max_num_seqs=1, max_queue=0)
    engine = service.runtime.engine
    from model_service.sampling import SamplingParams

    long_running = engine.generate(
        engine.encode_text("Hello"), SamplingParams(max_tokens=100, ignore_eos=True)
    )
    await anext(long_running)  # holds the only slot
    response = await service.client.post("/v1/chat/completions", json=chat(max_tokens=2))
    assert_error(response, 503)
    assert response.headers["retry-after"]
    await long_running.aclose()  # frees the slot
    again = await service.client.post("/v1/chat/completions", json=chat(max_tokens=2))
    assert again.status_code == 200


async def test_closing_a_generation_frees_its_slot(tiny_service_factory) -> None:
    service = tiny_service_factory(max_num_seqs=1, max_queue=0)
    engine = service.runtime.engine
    from model_service.sampling import SamplingParams

    for _ in range(3):  # would hit QueueFull on the second round if a slot leaked
        deltas = engine.generate(
            engine.encode_text("Hello"), SamplingParams(max_tokens=100, ignore_eos=True)
        )
        await anext(deltas)
        await deltas.aclose()
    for _ in range(50):
        if engine.running_count() == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.running_count() == 0
