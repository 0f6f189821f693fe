"""The OpenAI-compatible surface, through a real gateway process in front of the
scripted mock upstream (real sockets, real Redis with vector search)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.gateway import MOCK_EMBEDDER, MOCK_LLM, GatewayProcess, MockUpstream


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.master_key)


def test_openai_sdk_sync_chat(mock_gateway: GatewayProcess) -> None:
    reply = client(mock_gateway).chat.completions.create(
        model=MOCK_LLM, messages=[{"role": "user", "content": "Say something"}], max_tokens=5
    )
    assert reply.choices[0].message.role == "assistant"
    assert len(reply.choices[0].message.content.split()) == 5
    assert reply.usage is not None and reply.usage.completion_tokens == 5


async def test_openai_sdk_async_chat_and_completion(mock_gateway: GatewayProcess) -> None:
    async_client = openai.AsyncOpenAI(
        base_url=f"{mock_gateway.base_url}/v1", api_key=mock_gateway.master_key
    )
    chat = await async_client.chat.completions.create(
        model=MOCK_LLM, messages=[{"role": "user", "content": "async hello"}]
    )
    completion = await async_client.completions.create(model=MOCK_LLM, prompt="Once upon")
    await async_client.close()
    assert chat.choices[0].message.content
    assert completion.choices[0].text


def test_openai_sdk_streaming_with_usage(mock_gateway: GatewayProcess) -> None:
    stream = client(mock_gateway).chat.completions.create(
        model=MOCK_LLM,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_stream_without_usage_request_has_no_usage_chunk(mock_gateway: GatewayProcess) -> None:
    # The gateway asks the upstream for usage (to settle limits) but hides it.
    stream = client(mock_gateway).chat.completions.create(
        model=MOCK_LLM, messages=[{"role": "user", "content": "no usage"}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_streaming_headers(mock_gateway: GatewayProcess) -> None:
    with httpx.stream(
        "POST",
        f"{mock_gateway.base_url}/v1/chat/completions",
        headers=mock_gateway.headers,
        json={"model": MOCK_LLM, "messages": [{"role": "user", "content": "h"}], "stream": True},
    ) as response:
        body = response.read().decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"]
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    assert body.rstrip().endswith("data: [DONE]")


def test_openai_fields_pass_through_unchanged_and_unknown_ones_are_dropped(
    mock_gateway: GatewayProcess, mock_upstream: MockUpstream
) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    extra = {
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
    }
    response = httpx.post(
        f"{mock_gateway.base_url}/v1/chat/completions",
        headers=mock_gateway.headers,
        json={
            "model": MOCK_LLM,
            "messages": [{"role": "user", "content": "tools"}],
            "vendor_specific": {"nested": [1, 2.5, None]},  # not in GATEWAY_FORWARD_FIELDS
            **extra,
        },
    )
    assert response.status_code == 200
    received = mock_upstream.last_request()
    for name, value in extra.items():
        assert received[name] == value
    assert "vendor_specific" not in received


def test_completions_echo_passes_through(
    mock_gateway: GatewayProcess, mock_upstream: MockUpstream
) -> None:
    reply = client(mock_gateway).completions.create(
        model=MOCK_LLM, prompt="abc", echo=True, logprobs=1, max_tokens=3
    )
    assert reply.choices[0].text
    received = mock_upstream.last_request()
    assert received["echo"] is True and received["logprobs"] == 1


def test_embeddings(mock_gateway: GatewayProcess) -> None:
    result = client(mock_gateway).embeddings.create(model=MOCK_EMBEDDER, input=["a b", "c"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 64


def test_model_alias_routes_to_target(mock_gateway: GatewayProcess) -> None:
    reply = client(mock_gateway).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "alias"}]
    )
    assert reply.model == MOCK_LLM


def test_models_health_readiness_and_metrics(mock_gateway: GatewayProcess) -> None:
    models = {m.id for m in client(mock_gateway).models.list()}
    assert {MOCK_LLM, MOCK_EMBEDDER, "fast"} <= models
    assert httpx.get(f"{mock_gateway.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{mock_gateway.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    metrics = mock_gateway.metrics_text()
    for name in (
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_overhead_seconds",
        "gateway_time_to_first_token_seconds",
        "gateway_cache_requests_total",
        "gateway_in_flight_requests",
        "gateway_tokens_total",
        "gen_ai_client_token_usage",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics, name


def test_request_id_is_echoed(mock_gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{mock_gateway.base_url}/v1/chat/completions",
        headers={**mock_gateway.headers, "x-request-id": "req-123"},
        json={"model": MOCK_LLM, "messages": [{"role": "user", "content": "id"}]},
    )
    assert response.headers["x-client-request-id"] == "req-123"
    assert response.headers["x-request-id"] not in ("", "req-123")


@pytest.mark.parametrize("stream", [False, True])
def test_langchain_chat_openai(mock_gateway: GatewayProcess, stream: bool) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=MOCK_LLM,
        base_url=f"{mock_gateway.base_url}/v1",
        api_key=mock_gateway.master_key,
        max_tokens=4,
    )
    if stream:
        text = "".join(str(chunk.content) for chunk in llm.stream("Hello LangChain"))
    else:
        text = str(llm.invoke("Hello LangChain").content)
    assert len(text.split()) == 4
