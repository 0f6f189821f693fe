"""The pipeline's stages in process: a real Redis server, a scripted upstream app as
the upstreams' transport, the app factory given its state. No gateway process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.keys import KeyRecord
from gateway.pipeline import Answer
from gateway.route_adapters import CHAT, COMPLETION, EMBEDDING
from gateway.settings import Settings, UpstreamConfig
from gateway.state import GatewayState
from gateway.stream_relay import StreamAnswer
from tests.support.redis import RedisServer
from tests.support.scripted_upstream import TOOL_CALL, USAGE, WORDS, ScriptedUpstream

MODEL, EMBEDDER = "scripted-llm", "scripted-embed"
StateFactory = Callable[..., Any]


@pytest.fixture
def upstream() -> ScriptedUpstream:
    return ScriptedUpstream()


@pytest.fixture
async def make_state(
    redis_server: RedisServer, upstream: ScriptedUpstream
) -> AsyncIterator[StateFactory]:
    started: list[GatewayState] = []

    async def make(**overrides: Any) -> GatewayState:
        # Each call here makes a fresh key: share the cache between keys so that a
        # second call can hit (per-key scope is tested in test_gateway_tenancy.py).
        overrides.setdefault("cache_scope", "shared")
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=redis_server.url,
            upstreams=[UpstreamConfig(name="s", base_url="http://s", models=[MODEL, EMBEDDER])],
            cache_version=uuid.uuid4().hex,  # every test starts with an empty cache
            **overrides,
        )
        state = GatewayState(settings, upstream_transport=httpx.ASGITransport(app=upstream))
        await state.start()
        started.append(state)
        return state

    yield make
    for state in started:
        await state.stop()


def key(**limits: Any) -> KeyRecord:
    return KeyRecord(id=f"key_{uuid.uuid4().hex[:12]}", name="pipeline", **limits)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi there"}], **extra}


def sample(state: GatewayState, name: str, **labels: str) -> float:
    value = state.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def whole(state: GatewayState, route: Any, record: KeyRecord, payload: Any) -> Answer:
    answer = await state.pipeline.handle(route, record, payload, uuid.uuid4().hex)
    assert isinstance(answer, Answer)
    return answer


async def test_a_json_answer_is_cached_and_the_exchange_closes(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state()
    first = await whole(state, CHAT, key(), chat(temperature=0))
    second = await whole(state, CHAT, key(), chat(temperature=0))

    assert len(upstream.requests) == 1
    assert first.status == 200 and first.headers["x-cache"] == "miss"
    assert orjson.loads(first.body)["choices"][0]["message"]["content"] == "".join(WORDS)
    assert second.headers["x-cache"] == "hit" and second.headers["x-cache-kind"] == "exact"
    assert second.body == first.body
    assert sample(state, "gateway_in_flight_requests") == 0
    labels = {"route": "chat", "status": "200", "model": MODEL}
    assert sample(state, "gateway_requests_total", **labels) == 2
    assert sample(state, "gateway_cache_requests_total", kind="exact", result="hit") == 1


async def test_upstream_sees_each_request_once_and_a_miss_is_stored(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state()
    await whole(state, COMPLETION, key(), {"model": MODEL, "prompt": "x", "seed": 1})
    await whole(state, COMPLETION, key(), {"model": MODEL, "prompt": "x", "seed": 1})
    assert len(upstream.requests) == 1


async def test_plan_cache_bypasses_what_must_not_be_cached(make_state: StateFactory) -> None:
    state = await make_state()
    answer = await whole(state, CHAT, key(), chat())  # sampled: not deterministic
    assert answer.headers["x-cache"] == "bypass"
    # Embeddings are deterministic: always cacheable.
    embed = {"model": EMBEDDER, "input": ["a", "bb"]}
    await whole(state, EMBEDDING, key(), embed)
    assert (await whole(state, EMBEDDING, key(), embed)).headers["x-cache"] == "hit"


async def test_reserve_reads_the_cache_in_the_same_round_trip_and_refuses_first(
    make_state: StateFactory,
) -> None:
    state = await make_state()
    record = key(rpm=1)
    first = await whole(state, CHAT, record, chat(temperature=0))
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    # A cache hit still counts as a request: the reservation comes before the read.
    with pytest.raises(GatewayError) as refused:
        await whole(state, CHAT, record, chat(temperature=0))
    assert refused.value.status == 429 and "retry-after" in refused.value.headers
    assert sample(state, "gateway_in_flight_requests") == 0
    # Another key gets the cached answer from the combined reservation + read.
    hit = await whole(state, CHAT, key(rpm=5), chat(temperature=0))
    assert hit.headers["x-cache"] == "hit"


async def test_tokens_settle_to_the_real_usage(make_state: StateFactory) -> None:
    state = await make_state()
    record = key(tpm=1000)
    await whole(state, CHAT, record, chat(max_tokens=400))
    await _background_done(state)
    # The reservation (prompt estimate + 400) was replaced by the real usage.
    after = await state.limiter.reserve(record, 1)
    assert after.used_tokens == USAGE["total_tokens"] + 1


async def _background_done(state: GatewayState) -> None:
    if state._background:
        await asyncio.wait(state._background, timeout=5)


async def test_admit_refuses_unknown_models_denied_models_and_too_many_tokens(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(max_tokens_cap=50)
    cases = [
        (chat(model="nope"), key(), 404, "model_not_found"),
        (chat(), key(models=("other",)), 403, "model_denied"),
        (chat(max_tokens=51), key(), 400, "max_tokens_exceeded"),
        (chat(max_tokens=20), key(max_tokens=10), 400, "max_tokens_exceeded"),
        (b"{not json", key(), 400, "invalid_json"),
        ({"model": MODEL, "messages": []}, key(), 400, "invalid_request"),
    ]
    for payload, record, status, code in cases:
        with pytest.raises(GatewayError) as refused:
            await whole(state, CHAT, record, payload)
        assert (refused.value.status, refused.value.code) == (status, code), payload
    assert upstream.requests == []
    # Without max_tokens the cap is sent upstream.
    await whole(state, CHAT, key(), chat())
    assert upstream.last["max_tokens"] == 50
    assert sample(state, "gateway_in_flight_requests") == 0


async def test_guard_input_refuses_denied_terms_and_redacts_personal_data(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(deny_terms=["forbidden"], pii_input="redact")
    with pytest.raises(GatewayError) as refused:
        await whole(state, CHAT, key(), chat(messages=[{"role": "user", "content": "forbidden"}]))
    assert refused.value.code == "content_denied"
    message = {"role": "user", "content": "mail me at ada@example.com"}
    await whole(state, CHAT, key(), chat(messages=[message]))
    assert upstream.last["messages"][0]["content"] == "mail me at [REDACTED_EMAIL]"


async def test_upstream_refusals_pass_on_4xx_and_turn_5xx_into_502(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(max_retries=0)
    upstream.status = 400
    refused = await whole(state, CHAT, key(), chat())
    assert refused.status == 400 and orjson.loads(refused.body)["error"]["message"]
    upstream.status = 500
    with pytest.raises(GatewayError) as failed:
        await whole(state, CHAT, key(), chat())
    assert failed.value.status == 502
    assert sample(state, "gateway_in_flight_requests") == 0


async def stream_events(state: GatewayState, payload: dict[str, Any]) -> list[bytes]:
    answer = await state.pipeline.handle(CHAT, key(), payload, uuid.uuid4().hex)
    assert isinstance(answer, StreamAnswer)
    return [event async for event in answer.events if event]


async def test_a_stream_is_relayed_cached_and_replayed(make_state: StateFactory) -> None:
    state = await make_state()
    payload = chat(temperature=0, stream=True)
    events = await stream_events(state, payload)

    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "".join(WORDS) and events[-1] == b"data: [DONE]\n\n"
    # The usage chunk the gateway asked for is not shown to a client that did not.
    assert all("usage" not in c or not c["usage"] for c in chunks)
    assert sample(state, "gateway_in_flight_requests") == 0
    replay = await state.pipeline.handle(CHAT, key(), payload, "r")
    assert isinstance(replay, Answer) and replay.headers["x-cache"] == "hit"
    assert replay.media_type == "text/event-stream" and WORDS[1].encode() in replay.body


async def test_a_stream_left_before_its_first_event_still_closes_the_exchange(
    make_state: StateFactory,
) -> None:
    state = await make_state()
    record = key(tpm=10_000)
    answer = await state.pipeline.handle(CHAT, record, chat(stream=True), "left")
    assert isinstance(answer, StreamAnswer)
    assert sample(state, "gateway_in_flight_requests") == 1
    await answer.events.aclose()  # the client went away before any event was sent
    assert sample(state, "gateway_in_flight_requests") == 0
    labels = {"route": "chat", "status": "499", "model": MODEL}
    assert sample(state, "gateway_requests_total", **labels) == 1


async def test_the_app_factory_takes_its_state(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(master_key="sk-pipeline-test")
    app = create_app(state=state)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat(),
            headers={"authorization": "Bearer sk-pipeline-test", "x-request-id": "rid-1"},
        )
    assert response.status_code == 200, response.text
    # The id is the gateway's own; the caller's travels beside it, both ways.
    request_id = response.headers["x-request-id"]
    assert request_id != "rid-1" and len(request_id) == 32
    assert response.headers["x-client-request-id"] == "rid-1"
    assert upstream.headers[-1]["x-request-id"] == request_id
    assert upstream.headers[-1]["x-client-request-id"] == "rid-1"
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0


async def replayed_stream(state: GatewayState, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Fill the cache with `payload` (streamed), then return the replayed chunks."""
    live = await stream_events(state, payload)
    assert live[-1] == b"data: [DONE]\n\n"
    replay = await state.pipeline.handle(CHAT, key(), payload, "replay")
    assert isinstance(replay, Answer) and replay.headers["x-cache"] == "hit"
    events = [e for e in replay.body.split(b"\n\n") if e and e != b"data: [DONE]"]
    return [orjson.loads(e[6:]) for e in events]


async def test_a_tool_call_survives_the_cache_and_replays_as_tool_call_deltas(
    make_state: StateFactory,
) -> None:
    state = await make_state()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    chunks = await replayed_stream(state, chat(temperature=0, stream=True, tools=tools))
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls == [{"index": 0, **TOOL_CALL}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # The plain request shares the entry: the assembled answer holds the call.
    whole_answer = await whole(state, CHAT, key(), chat(temperature=0, tools=tools))
    message = orjson.loads(whole_answer.body)["choices"][0]["message"]
    assert whole_answer.headers["x-cache"] == "hit" and message["tool_calls"] == [TOOL_CALL]


async def test_logprobs_survive_the_cache_token_by_token(make_state: StateFactory) -> None:
    state = await make_state()
    chunks = await replayed_stream(state, chat(temperature=0, stream=True, logprobs=True))
    with_text = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["delta"]["content"] for c in with_text] == WORDS
    tokens = [c["choices"][0]["logprobs"]["content"][0]["token"] for c in with_text]
    assert tokens == WORDS


async def test_several_choices_are_cached_as_a_whole_and_reserved_for(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state()
    record = key(tpm=1000)
    first = await whole(state, CHAT, record, chat(temperature=0, n=3, max_tokens=100))
    assert first.headers["x-cache"] == "miss"
    # n counts in the reservation: prompt estimate + 3 x 100 reserved up front.
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 1000 - 300
    again = await whole(state, CHAT, key(), chat(temperature=0, n=3, max_tokens=100))
    assert again.headers["x-cache"] == "hit" and len(upstream.requests) == 1
    assert [c["index"] for c in orjson.loads(again.body)["choices"]] == [0, 1, 2]
    streamed = await replayed_stream(state, chat(temperature=0, n=2, stream=True))
    indices = {c["choices"][0]["index"] for c in streamed if c["choices"]}
    assert indices == {0, 1}


async def test_token_fields_must_be_integers_and_both_are_capped(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(max_tokens_cap=50)
    cases = [
        (chat(max_tokens="5"), "max_tokens", "invalid_request"),
        (chat(max_completion_tokens=5.5), "max_completion_tokens", "invalid_request"),
        (chat(max_tokens=True), "max_tokens", "invalid_request"),
        (chat(max_tokens=10, max_completion_tokens=60), "max_completion_tokens", None),
        (chat(max_tokens=60, max_completion_tokens=10), "max_tokens", None),
    ]
    for payload, param, code in cases:
        with pytest.raises(GatewayError) as refused:
            await whole(state, CHAT, key(), payload)
        assert refused.value.status == 400 and refused.value.param == param, payload
        assert refused.value.code == (code or "max_tokens_exceeded")
    assert upstream.requests == []


async def test_every_prompt_of_a_batch_counts_in_the_reservation(
    make_state: StateFactory,
) -> None:
    state = await make_state()
    record = key(tpm=10_000)
    batch = {"model": MODEL, "prompt": ["a" * 400, "b" * 400], "max_tokens": 10, "n": 2}
    answer = await whole(state, COMPLETION, record, batch)
    # 800 characters ~ 200 tokens, plus 2 prompts x n=2 x 10 tokens.
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 200 - 40)
    ids = {"model": MODEL, "prompt": [[1, 2, 3], [4, 5]], "max_tokens": 10}
    answer = await whole(state, COMPLETION, key(tpm=10_000), ids)
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 5 - 20)


async def test_a_stream_that_ends_early_is_charged_the_prompt_and_what_was_sent(
    make_state: StateFactory,
) -> None:
    state = await make_state()
    record = key(tpm=10_000)
    answer = await state.pipeline.handle(CHAT, record, chat(stream=True, max_tokens=100), "x")
    assert isinstance(answer, StreamAnswer)
    sent = [await anext(answer.events), await anext(answer.events)]
    assert sent[0].startswith(b"data: ")
    await answer.events.aclose()  # the client left mid-stream: no usage chunk came
    await _background_done(state)
    used = (await state.limiter.reserve(record, 1)).used_tokens - 1
    prompt = 2  # "Hi there": 8 characters
    assert prompt < used < prompt + 100  # not zero, not the whole reservation


async def test_auth_runs_before_any_body_is_read_and_every_route_limits_its_body(
    make_state: StateFactory,
) -> None:
    state = await make_state(master_key="sk-body-test", max_body_bytes=2048)
    reads = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal reads
        while True:  # a body that never ends: reading it would hang the request
            reads += 1
            yield b'{"name": "x", ' if reads == 1 else b" " * 512
            await asyncio.sleep(0)

    transport = httpx.ASGITransport(app=create_app(state=state))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for path in ("/admin/keys", "/v1/chat/completions"):
            reads = 0
            response = await client.post(path, content=endless())
            assert response.status_code == 401, (path, response.text)
            assert reads == 0, path  # refused before the first byte of the body
        master = {"authorization": "Bearer sk-body-test"}
        for path in ("/admin/keys", "/v1/chat/completions"):
            response = await client.post(path, content=endless(), headers=master)
            assert response.status_code == 413, (path, response.text)
            assert response.json()["error"]["code"] == "body_too_large"
        # Still answering afterwards.
        created = await client.post("/admin/keys", json={"name": "after"}, headers=master)
        assert created.status_code == 201, created.text


class _TimingOutTransport(httpx.AsyncBaseTransport):
    """The upstream app behind a transport that first raises the given timeouts."""

    def __init__(self, app: ScriptedUpstream, timeouts: list[httpx.TimeoutException]) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.timeouts = timeouts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.timeouts:
            raise self.timeouts.pop(0)
        return await self.inner.handle_async_request(request)


async def test_the_breaker_counts_upstream_failures_not_pool_or_read_timeouts(
    redis_server: RedisServer, upstream: ScriptedUpstream
) -> None:
    timeouts: list[httpx.TimeoutException] = [
        *(httpx.PoolTimeout("pool full") for _ in range(3)),
        *(httpx.ReadTimeout("long generation") for _ in range(3)),
    ]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_server.url,
        upstreams=[UpstreamConfig(name="s", base_url="http://s", models=[MODEL])],
        upstream_breaker_failures=2,
        max_retries=0,
    )
    state = GatewayState(settings, upstream_transport=_TimingOutTransport(upstream, timeouts))
    await state.start()
    try:
        for expected in (503, 503, 503, 504, 504, 504):
            with pytest.raises(GatewayError) as refused:
                await whole(state, CHAT, key(), chat())
            assert refused.value.status == expected
        assert state.upstreams.upstreams[0].breaker.state == "closed"
        assert (await whole(state, CHAT, key(), chat())).status == 200
    finally:
        await state.stop()
