"""Exchange records, capture and feedback in process: a fresh real Redis server per test,
the scripted upstream as transport, the app over ASGI (docs/feedback.md)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.exchange_log import CAPTURE_PREFIX, EXCHANGES, new_request_id
from gateway.keys import KeyRecord
from gateway.pipeline import Answer
from gateway.route_adapters import CHAT
from gateway.settings import Settings, UpstreamConfig
from gateway.state import GatewayState
from tests.support.gateway import MOCK_LLM, upstreams_env
from tests.support.otlp import attributes_of, otlp_receiver
from tests.support.processes import source_path
from tests.support.redis import RedisServer
from tests.support.scripted_upstream import WORDS, ScriptedUpstream

MODEL = "scripted-llm"
MASTER = "sk-feedback-master"
Client = httpx.AsyncClient


class Gateway:
    """A gateway app in process with its state, a client and two keys of its own."""

    def __init__(self, state: GatewayState, client: Client, keys: dict[str, str]) -> None:
        self.state, self.client, self.keys = state, client, keys

    def auth(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}

    async def chat(self, name: str, text: str) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        response = await self.client.post(
            "/v1/chat/completions", json=body, headers=self.auth(name)
        )
        assert response.status_code == 200, response.text
        return response

    async def settled(self) -> None:
        """Wait for the background appends (they run after the answer)."""
        pending = set(self.state._background)
        if pending:
            await asyncio.wait(pending)

    def metric(self, name: str, **labels: str) -> float:
        return self.state.metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
async def make_gateway(
    redis_factory: Callable[..., RedisServer],
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[GatewayState, Client]] = []

    async def make(**overrides: Any) -> Gateway:
        redis = redis_factory()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=redis.url,
            master_key=MASTER,
            upstreams=[UpstreamConfig(name="s", base_url="http://s", models=[MODEL])],
            # These tests count what reached Redis; on a loaded CI host a 0.25 s call
            # (the default) can time out and be dropped by design, which they are not about.
            **{"redis_timeout_seconds": 5.0, **overrides},
        )
        upstream = httpx.ASGITransport(app=ScriptedUpstream())
        state = GatewayState(settings, upstream_transport=upstream)
        await state.start()
        client = Client(
            transport=httpx.ASGITransport(app=create_app(state=state)), base_url="http://gw"
        )
        opened.append((state, client))
        keys = {"master": MASTER}
        for name in ("alice", "bob"):
            keys[name], _ = await state.keys.create(name)
        gateway = Gateway(state, client, keys)
        gateway.redis = redis  # type: ignore[attr-defined]
        return gateway

    yield make
    for state, client in opened:
        await client.aclose()
        await state.stop()


def all_redis_text(redis: RedisServer) -> str:
    """Every key and value in the server, as one text to search."""
    client = redis.client()
    blob: list[str] = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        blob.append(name)
        if kind == "string":
            blob.append(client.get(name) or "")
        elif kind == "hash":
            blob += [f"{k}={v}" for k, v in client.hgetall(name).items()]
        elif kind == "list":
            blob += client.lrange(name, 0, -1)
        elif kind == "stream":
            for _, fields in client.xrange(name):
                blob += [f"{k}={v}" for k, v in fields.items()]
        else:
            blob.append(f"unexpected {kind}")
    return "\n".join(blob)


async def test_thirty_chats_ten_rated_down_are_what_the_admin_view_returns(
    make_gateway: Callable[..., Any],
) -> None:
    gw = await make_gateway(capture_sample_rate=1.0)
    ids = [(await gw.chat("alice", f"question {n}")).headers["x-request-id"] for n in range(30)]
    await gw.settled()
    down = ids[:10]
    for request_id in down:
        response = await gw.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "rating": "down", "correction": "Better."},
            headers=gw.auth("alice"),
        )
        assert response.status_code == 201, response.text
    rated_up = {"request_id": ids[10], "score": 0.5, "comment": "fine", "tags": ["ok"]}
    assert (
        await gw.client.post("/v1/feedback", json=rated_up, headers=gw.auth("alice"))
    ).status_code == 201

    assert gw.metric("gateway_feedback_total", rating="down") == 10
    assert gw.metric("gateway_feedback_total", rating="up") == 1
    listed = await gw.client.get(
        "/admin/exchanges", params={"rating": "down", "since": "1d"}, headers=gw.auth("master")
    )
    assert listed.status_code == 200, listed.text
    items = listed.json()["data"]
    assert sorted(i["request_id"] for i in items) == sorted(down)
    first = items[0]
    assert first["key_name"] == "alice" and first["route"] == "chat" and first["status"] == "200"
    assert first["feedback"][0]["correction"] == "Better."
    number = ids.index(first["request_id"])
    assert first["content"]["input"] == [{"role": "user", "content": f"question {number}"}]
    assert first["content"]["output"] == "".join(WORDS)
    everything = await gw.client.get(
        "/admin/exchanges", params={"captured": "true"}, headers=gw.auth("master")
    )
    assert len(everything.json()["data"]) == 30
    own = await gw.client.get(
        "/v1/feedback", params={"request_id": down[0]}, headers=gw.auth("alice")
    )
    assert [e["rating"] for e in own.json()["data"]] == ["down"]


async def test_feedback_refuses_other_keys_unknown_ids_and_bad_bodies(
    make_gateway: Callable[..., Any],
) -> None:
    gw = await make_gateway()
    request_id = (await gw.chat("alice", "hello")).headers["x-request-id"]
    await gw.settled()

    async def rate(body: Any, who: str = "alice") -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await gw.client.post("/v1/feedback", content=content, headers=gw.auth(who))

    other = await rate({"request_id": request_id, "rating": "down"}, who="bob")
    assert other.status_code == 403 and other.json()["error"]["code"] == "not_your_request"
    bob_reads = await gw.client.get(
        "/v1/feedback", params={"request_id": request_id}, headers=gw.auth("bob")
    )
    assert bob_reads.status_code == 403
    for unknown in (new_request_id(), "not-an-id"):
        missing = await rate({"request_id": unknown, "rating": "up"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"
    for bad in (
        {"request_id": request_id},  # neither rating nor score
        {"request_id": request_id, "rating": "meh"},
        {"request_id": request_id, "score": 2},
        {"request_id": request_id, "rating": "up", "surprise": 1},
        {"rating": "up"},
        b"{not json",
        b"[]",
    ):
        refused = await rate(bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["type"] == "invalid_request_error"
    not_admin = await gw.client.get("/admin/exchanges", headers=gw.auth("alice"))
    assert not_admin.status_code == 403
    bad_since = await gw.client.get(
        "/admin/exchanges", params={"since": "soon"}, headers=gw.auth("master")
    )
    assert bad_since.status_code == 400
    assert gw.metric("gateway_feedback_total", rating="down") == 0
    # Still answering, and the owner can still rate.
    assert (await rate({"request_id": request_id, "rating": "up"})).status_code == 201


async def test_capture_off_keeps_no_message_text_in_redis(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway()  # GATEWAY_CAPTURE_SAMPLE_RATE defaults to 0
    marker = uuid.uuid4().hex
    for n in range(30):
        response = await gw.chat("alice", f"secret-{marker}-{n}")
        assert response.headers["x-cache"] == "bypass"  # sampled chats are never cached
    await gw.settled()
    blob = all_redis_text(gw.redis)
    assert marker not in blob and "question" not in blob
    assert "scripted upstream" not in blob  # nor the answers
    assert gw.redis.client().xlen(EXCHANGES) == 30  # the records are there, without content
    assert not list(gw.redis.client().scan_iter(match=CAPTURE_PREFIX + "*"))


async def test_a_key_rate_overrides_the_global_rate_and_pii_is_redacted(
    make_gateway: Callable[..., Any],
) -> None:
    gw = await make_gateway(capture_key_rates={"alice": 1.0}, pii_input="redact")
    alice = (await gw.chat("alice", "mail me at jane.doe@example.com")).headers["x-request-id"]
    await gw.chat("bob", "bob's words")
    await gw.settled()
    names = list(gw.redis.client().scan_iter(match=CAPTURE_PREFIX + "*"))
    assert names == [CAPTURE_PREFIX + alice]
    captured = gw.redis.client().hget(names[0], "input")
    assert "jane.doe@example.com" not in captured and "mail me at" in captured


async def test_a_streamed_answer_is_captured_whole_with_the_clients_id_beside_it(
    make_gateway: Callable[..., Any],
) -> None:
    gw = await make_gateway(capture_sample_rate=1.0)
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    headers = {**gw.auth("alice"), "x-request-id": "tenant-7"}
    async with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        assert r.headers["x-client-request-id"] == "tenant-7"
        async for _ in r.aiter_bytes():
            pass
    await gw.settled()
    listed = await gw.client.get("/admin/exchanges", headers=gw.auth("master"))
    (item,) = listed.json()["data"]
    assert item["request_id"] == request_id and item["client_request_id"] == "tenant-7"
    assert item["content"]["output"] == "".join(WORDS)


async def test_the_stream_stays_at_its_length_limit(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(exchange_stream_max_len=10)
    for n in range(25):
        await gw.chat("alice", f"n{n}")
    await gw.settled()
    assert gw.redis.client().xlen(EXCHANGES) == 10


async def test_a_failing_redis_never_fails_the_request(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(capture_sample_rate=1.0)
    gw.redis.stop()
    record = KeyRecord(id="key_offline", name="offline")
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "still there?"}]}
    answer = await gw.state.pipeline.handle(CHAT, record, payload, new_request_id())
    assert isinstance(answer, Answer) and answer.status == 200
    await gw.settled()
    assert gw.metric("gateway_exchange_records_dropped_total") == 1


async def test_purge_deletes_one_keys_captures_then_all(
    make_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    gw = await make_gateway(capture_sample_rate=1.0)
    for who in ("alice", "alice", "bob"):
        await gw.chat(who, f"{who} says hi")
    await gw.settled()

    async def purge(*args: str) -> str:
        env = {
            **os.environ,
            "GATEWAY_REDIS_URL": gw.redis.url,
            "PYTHONPATH": source_path("gateway"),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "captures",
            "purge",
            *args,
            env=env,
            cwd=tmp_path,  # no project .env
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, out
        return out.decode()

    assert "Deleted 2" in await purge("--key", "alice")
    remaining = list(gw.redis.client().scan_iter(match=CAPTURE_PREFIX + "*"))
    assert [gw.redis.client().hget(n, "key_name") for n in remaining] == ["bob"]
    assert "Deleted 1" in await purge()
    assert not list(gw.redis.client().scan_iter(match=CAPTURE_PREFIX + "*"))


def test_feedback_is_an_evaluation_event_on_the_requests_trace(
    gateway_factory: Callable[..., Any],
    redis_factory: Callable[..., RedisServer],
    mock_upstream: Any,
) -> None:
    with otlp_receiver() as receiver:
        gateway = gateway_factory(
            redis_factory().url,
            GATEWAY_UPSTREAMS=upstreams_env(("mock", mock_upstream.base_url, [MOCK_LLM])),
            OTEL_SDK_DISABLED="false",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        auth = {"authorization": f"Bearer {gateway.create_key('traced')}"}
        body = {"model": MOCK_LLM, "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{gateway.base_url}/v1/chat/completions", json=body, headers=auth)
        request_id = answer.headers["x-request-id"]
        feedback = {"request_id": request_id, "score": -0.5, "comment": "too short"}
        rated = httpx.post(f"{gateway.base_url}/v1/feedback", json=feedback, headers=auth)
        if rated.status_code == 404:  # the record lands just after the answer
            rated = httpx.post(f"{gateway.base_url}/v1/feedback", json=feedback, headers=auth)
        assert rated.status_code == 201, rated.text
        (genai,) = receiver.wait_for(lambda s: s.name == f"chat {MOCK_LLM}", timeout=15)
        (evaluation,) = receiver.wait_for(
            lambda s: any(e.name == "gen_ai.evaluation.result" for e in s.events), timeout=15
        )
    assert evaluation.trace_id == genai.trace_id
    assert evaluation.parent_span_id == genai.span_id
    (event,) = evaluation.events
    attributes = attributes_of(event)
    assert attributes["gen_ai.evaluation.name"] == "user_feedback"
    assert attributes["gen_ai.evaluation.score.value"] == -0.5
    assert attributes["gen_ai.evaluation.score.label"] == "down"
    assert attributes["gen_ai.evaluation.explanation"] == "too short"
    assert attributes["gateway.request_id"] == request_id
