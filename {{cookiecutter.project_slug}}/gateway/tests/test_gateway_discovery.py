"""Model discovery in process: the `/v1/models` parser and its bounds (hostile, huge
and garbled listings), and the pool routing what a listing names (LoRA adapters), with
a real Redis server and the scripted upstream app as the upstreams' transport."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway import model_listing
from gateway.errors import GatewayError
from gateway.keys import KeyRecord
from gateway.model_listing import (
    MAX_LISTED_MODELS,
    MAX_LISTING_BYTES,
    ListingError,
    fetch_listing,
    parse_listing,
)
from gateway.pipeline import Answer
from gateway.route_adapters import CHAT
from gateway.settings import Settings, UpstreamConfig
from gateway.state import GatewayState
from tests.support.redis import RedisServer
from tests.support.scripted_upstream import ScriptedUpstream

BASE, LORA = "scripted-llm", "scripted-llm-lora"
StateFactory = Callable[..., Any]


def listing(*cards: dict[str, Any]) -> bytes:
    return orjson.dumps({"object": "list", "data": list(cards)})


def card(model: str, parent: str | None = None) -> dict[str, Any]:
    return {"id": model, "object": "model", "owned_by": "vllm", "root": "/x", "parent": parent}


# the parser ---------------------------------------------------------------------------
def test_discovery_parser_takes_ids_and_lora_parents_and_ignores_other_fields() -> None:
    parsed = parse_listing(listing(card(BASE), card(LORA, BASE), card(LORA, "other")))
    assert [(m.id, m.parent) for m in parsed.models] == [(BASE, None), (LORA, BASE)]
    assert not parsed.truncated


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"[1, 2, 3]",
        b'{"data": {"id": "m"}}',
        b'{"object": "list"}',
        b'{"data": [{"object": "model"}]}',  # no id
        b'{"data": [{"id": 7}]}',
        b'{"data": [{"id": ""}]}',
        b'{"data": [{"id": "m\\u0000\\n"}]}',  # control characters
        b'{"data": [{"id": "m", "parent": ["x"]}]}',
        orjson.dumps({"data": [{"id": "m" * 257}]}),
        b"[" * 100_000,  # nesting deeper than the JSON parser goes
    ],
)
def test_discovery_parser_refuses_garbage_listings(body: bytes) -> None:
    with pytest.raises(ListingError) as refused:
        parse_listing(body)
    assert refused.value.reason == "invalid"


def test_discovery_parser_takes_at_most_the_first_models_of_a_huge_listing() -> None:
    cards = [{"id": f"m{i}"} for i in range(MAX_LISTED_MODELS * 3)]
    parsed = parse_listing(listing(*cards))
    assert len(parsed.models) == MAX_LISTED_MODELS and parsed.truncated
    assert parsed.models[-1].id == f"m{MAX_LISTED_MODELS - 1}"


def test_discovery_parser_refuses_a_bad_entry_among_the_ones_it_takes() -> None:
    with pytest.raises(ListingError):
        parse_listing(listing(card(BASE), {"id": None}))
    # ... but not one past the models it takes, which it never looks at.
    cards = [{"id": f"m{i}"} for i in range(MAX_LISTED_MODELS)]
    assert parse_listing(listing(*cards, {"id": None})).truncated


# the bounded read ---------------------------------------------------------------------
class Endless(httpx.AsyncByteStream):
    """A body that never ends, counting what was read of it."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b'{"data": [' + b'{"id": "m"},' * 6000
        while True:
            self.sent += len(chunk)
            yield chunk


def client_answering(response: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://up/v1", transport=httpx.MockTransport(response))


async def test_discovery_read_stops_at_the_byte_bound_of_an_endless_listing() -> None:
    body = Endless()
    async with client_answering(lambda _: httpx.Response(200, stream=body)) as client:
        with pytest.raises(ListingError) as refused:
            await fetch_listing(client)
    assert refused.value.reason == "too_large"
    assert MAX_LISTING_BYTES < body.sent < MAX_LISTING_BYTES + 200_000


async def test_discovery_read_refuses_declared_huge_compressed_and_non_200_listings() -> None:
    answers = {
        "too_large": httpx.Response(200, headers={"content-length": str(10**12)}, stream=Endless()),
        "invalid": httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"x"),
        "status": httpx.Response(404, json={"error": {"message": "no such route"}}),
    }
    for reason, answer in answers.items():
        async with client_answering(lambda _, a=answer: a) as client:
            with pytest.raises(ListingError) as refused:
                await fetch_listing(client)
        assert refused.value.reason == reason


async def test_discovery_read_gives_up_on_a_listing_that_trickles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                yield b" "
                await asyncio.sleep(0.01)

    monkeypatch.setattr(model_listing, "LISTING_TIMEOUT_SECONDS", 0.2)
    async with client_answering(lambda _: httpx.Response(200, stream=Trickle())) as client:
        with pytest.raises(ListingError) as refused:
            await fetch_listing(client)
    assert refused.value.reason == "timeout"


# routing what a listing names ---------------------------------------------------------
@pytest.fixture
def upstream() -> ScriptedUpstream:
    return ScriptedUpstream()


@pytest.fixture
async def make_state(
    redis_server: RedisServer, upstream: ScriptedUpstream
) -> AsyncIterator[StateFactory]:
    started: list[GatewayState] = []

    async def make(**overrides: Any) -> GatewayState:
        # No background task (refresh 0): each test refreshes when it means to.
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=redis_server.url,
            upstreams=[UpstreamConfig(name="s", base_url="http://s", models=[BASE])],
            cache_version=uuid.uuid4().hex,
            models_refresh_seconds=0,
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
    return KeyRecord(id=f"key_{uuid.uuid4().hex[:12]}", name="discovery", **limits)


async def ask(state: GatewayState, model: str, record: KeyRecord | None = None) -> Answer:
    payload = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    answer = await state.pipeline.handle(CHAT, record or key(), payload, uuid.uuid4().hex)
    assert isinstance(answer, Answer)
    return answer


def listings_read(state: GatewayState, result: str) -> float:
    labels = {"upstream": "s", "result": result}
    return state.metrics.registry.get_sample_value("gateway_model_listings_total", labels) or 0


async def test_discovery_routes_a_listed_lora_adapter_until_it_is_no_longer_listed(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state()
    with pytest.raises(GatewayError) as unknown:
        await ask(state, LORA)
    assert unknown.value.status == 404 and LORA in unknown.value.message
    upstream.listing = listing(card(BASE), card(LORA, BASE))
    await state.discovery.refresh()
    assert (await ask(state, LORA)).status == 200
    assert upstream.last["model"] == LORA
    assert state.upstreams.parent_of(LORA) == BASE
    assert state.upstreams.served_by(state.upstreams.upstreams[0]) == [BASE, LORA]

    upstream.listing = listing(card(BASE))
    await state.discovery.refresh()
    with pytest.raises(GatewayError) as gone:
        await ask(state, LORA)
    assert (gone.value.status, gone.value.code) == (404, "model_not_found")
    assert f"'{LORA}'" in gone.value.message
    assert (await ask(state, BASE)).status == 200  # the static model stays


async def test_discovery_keeps_the_last_good_listing_when_a_refresh_fails(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state()
    upstream.listing = listing(card(LORA, BASE))
    await state.discovery.refresh()
    for garbage in (b"{not json", orjson.dumps({"data": [{"id": "x" * 10_000}]})):
        upstream.listing = garbage
        await state.discovery.refresh()
    upstream.listing = None  # 404: the route is gone
    await state.discovery.refresh()
    assert (await ask(state, LORA)).status == 200
    assert (listings_read(state, "ok"), listings_read(state, "invalid")) == (1, 2)
    assert listings_read(state, "status") == 1
    assert "x" * 300 not in state.upstreams.model_names()


async def test_discovery_applies_key_allow_lists_and_aliases_to_adapter_names(
    make_state: StateFactory, upstream: ScriptedUpstream
) -> None:
    state = await make_state(model_aliases={"house-style": LORA})
    upstream.listing = listing(card(BASE), card(LORA, BASE))
    await state.discovery.refresh()
    base_only = key(models=(BASE,))
    with pytest.raises(GatewayError) as denied:
        await ask(state, LORA, base_only)
    assert (denied.value.status, denied.value.code) == (403, "model_denied")
    assert (await ask(state, LORA, key(models=(LORA,)))).status == 200
    assert (await ask(state, "house-style")).status == 200
    assert upstream.last["model"] == LORA


async def test_discovery_is_off_at_zero_and_static_models_are_then_required() -> None:
    with pytest.raises(ValueError, match="GATEWAY_MODELS_REFRESH_SECONDS"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            upstreams=[UpstreamConfig(name="lister", base_url="http://x")],
            models_refresh_seconds=0,
        )
    with pytest.raises(ValueError, match=r"at least 0\.1"):
        Settings(_env_file=None, models_refresh_seconds=0.01)  # type: ignore[call-arg]
    external = UpstreamConfig(name="ext", base_url="http://x", models=["m"], api_key_env="K")
    assert not external.discovers  # external providers are not asked by default
    assert UpstreamConfig(name="own", base_url="http://x").discovers
