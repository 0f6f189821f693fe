"""Rate limits: atomic in Redis, shared by replicas, reserve-then-settle for tokens."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import httpx
import pytest

from gateway.keys import KeyRecord
from gateway.ratelimit import RateLimiter
from gateway.redis_store import RedisStore
from gateway.settings import Settings
from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    MockUpstream,
    gateway_launcher,
    upstreams_env,
)


def _record(rpm: int | None = None, tpm: int | None = None) -> KeyRecord:
    return KeyRecord(id=f"key_{uuid.uuid4().hex[:12]}", name="limits", rpm=rpm, tpm=tpm)


@pytest.fixture
async def limiter(redis_server):
    store = RedisStore(Settings(redis_url=redis_server.url))
    yield RateLimiter(store)
    await store.close()


async def test_requests_per_minute_is_exact_under_concurrency(limiter: RateLimiter) -> None:
    record = _record(rpm=10)
    results = await asyncio.gather(*(limiter.reserve(record, 1) for _ in range(25)))
    decisions = list(results)
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 10
    refused = [d for d in decisions if not d.allowed]
    assert {d.limit for d in refused} == {"requests"}
    assert all(1 <= d.retry_after <= 60 for d in refused)
    assert refused[0].headers()["x-ratelimit-remaining-requests"] == "0"


async def test_tokens_are_reserved_then_settled(limiter: RateLimiter) -> None:
    record = _record(tpm=1000)
    first = await limiter.reserve(record, 600)
    assert first.allowed
    # 600 reserved: a second 600-token request does not fit...
    assert not (await limiter.reserve(record, 600)).allowed
    # ...until the first settles at its real usage (100), giving 500 back.
    await limiter.settle(record, first, 100)
    second = await limiter.reserve(record, 600)
    assert second.allowed
    assert second.used_tokens == 700
    assert second.headers()["x-ratelimit-remaining-tokens"] == "300"


async def test_reservation_reads_the_cache_entry_in_the_same_round_trip(
    limiter: RateLimiter, redis_server
) -> None:
    # The store pipelines the reservation with the cache read; the limiter knows no cache.
    redis_server.client().set("gw:test:entry", "cached-body", ex=60)
    record = _record(rpm=5)
    raw, cached = await limiter.store.call_and_get(
        limiter.reserve_command(record, 1), "gw:test:entry"
    )
    decision = limiter.decision(record, 1, raw)
    assert decision.allowed and cached == b"cached-body"
    _, missing = await limiter.store.call_and_get(
        limiter.reserve_command(record, 1), "gw:test:absent"
    )
    assert missing is None


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, redis_server):
    """Two gateway processes sharing one Redis, in front of one mock upstream."""
    log_dir = tmp_path_factory.mktemp("replicas")
    mock = MockUpstream("mock-replicas", log_dir).start()
    make, started = gateway_launcher(log_dir)
    env = {
        "GATEWAY_UPSTREAMS": upstreams_env(("mock", mock.base_url, [MOCK_LLM, MOCK_EMBEDDER])),
        "GATEWAY_CACHE_ENABLED": "false",
    }
    try:
        # Replicas of one deployment: same settings, master key included.
        env["GATEWAY_MASTER_KEY"] = "sk-test-replicas-" + secrets.token_hex(8)
        first, second = make(redis_server.url, env, **env)
        yield first, second, mock
    finally:
        for process in started:
            process.stop()
        mock.stop()


def _post(gateway, key: str, **body):
    payload = {"model": MOCK_LLM, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json=payload,
    )


def test_two_replicas_share_one_rpm_limit(replicas) -> None:
    first, second, _ = replicas
    key = first.create_key("shared-rpm", rpm=6)
    statuses = [_post(gw, key).status_code for _ in range(5) for gw in (first, second)]
    assert statuses.count(200) == 6
    assert statuses.count(429) == 4
    refused = _post(second, key)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "6"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 'gateway_rate_limited_total{limit="requests"}' in second.metrics_text()


def test_two_replicas_share_one_tpm_limit(replicas) -> None:
    first, second, _ = replicas
    # Each request uses 1 prompt + 8 completion tokens (the mock's usage) and settles
    # at that. 40 tokens a minute: four requests in total fit, across both replicas.
    key = first.create_key("shared-tpm", tpm=40)
    statuses = [_post(gw, key, max_tokens=8).status_code for gw in (first, second) * 3]
    assert statuses == [200, 200, 200, 200, 429, 429]
    refused = _post(second, key, max_tokens=8)
    assert refused.json()["error"]["code"] == "rate_limit_tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == "40"


async def test_concurrent_requests_on_two_replicas_cannot_overshoot_tpm(replicas) -> None:
    # Slow streams keep requests in flight together; each reserves 1 + 100 tokens
    # up front, so with 250 tokens only two can be admitted at the same time.
    first, second, mock = replicas
    mock.control("ok", chunk_delay_ms=50)
    key = first.create_key("concurrent-tpm", tpm=250)

    async def stream(client: httpx.AsyncClient, base_url: str) -> int:
        body = {
            "model": MOCK_LLM,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100,
            "stream": True,
        }
        async with client.stream(
            "POST",
            f"{base_url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as response:
            await response.aread()
            return response.status_code

    try:
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = await asyncio.gather(
                *(stream(client, gw.base_url) for gw in (first, second) * 3)
            )
    finally:
        mock.control("ok", chunk_delay_ms=0)
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429]


def test_request_larger_than_the_whole_limit_is_explained(replicas) -> None:
    first, _, _ = replicas
    key = first.create_key("tiny", tpm=50)
    refused = _post(first, key, max_tokens=500)
    assert refused.status_code == 429
    assert "more than the key's limit" in refused.json()["error"]["message"]
