"""Prices, spend and budgets: settled in the limiter's Lua script, shared by replicas."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from gateway.keys import KeyRecord
from gateway.ratelimit import RateLimiter
from gateway.redis_store import RedisStore
from gateway.settings import ModelPrice, Settings
from gateway.spend import Prices, seconds_until_reset, to_nano, window_ids
from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    MockUpstream,
    gateway_launcher,
    upstreams_env,
)

# 0.001 per input token and 0.002 per output token.
PRICES = {MOCK_LLM: {"input_per_million": 1000, "output_per_million": 2000}}
PROMPT = "x" * 40  # 10 tokens, by the gateway's estimate and by the mock's usage
MAX_TOKENS = 16  # the mock answers 8 words: each request settles at 10 + 8 tokens
RESERVATION = 10 * 0.001 + MAX_TOKENS * 0.002  # the worst case reserved: 0.042
ANSWER_COST = 10 * 0.001 + 8 * 0.002  # what one answer costs: 0.026


@pytest.fixture(scope="module")
def priced_replicas(tmp_path_factory, redis_server):
    """Two gateway replicas with one price table, sharing one Redis and one upstream."""
    log_dir = tmp_path_factory.mktemp("spend")
    mock = MockUpstream("mock-spend", log_dir).start()
    make, started = gateway_launcher(log_dir)
    env = {
        "GATEWAY_UPSTREAMS": upstreams_env(("mock", mock.base_url, [MOCK_LLM, MOCK_EMBEDDER])),
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_MODEL_PRICES": json.dumps(PRICES),
        "GATEWAY_MASTER_KEY": "sk-test-spend-" + secrets.token_hex(8),
    }
    try:
        yield make(redis_server.url, env, **env)
    finally:
        for process in started:
            process.stop()
        mock.stop()


def _body() -> dict:
    return {
        "model": MOCK_LLM,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }


async def _ask(client: httpx.AsyncClient, gateway, key: str) -> httpx.Response:
    return await client.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json=_body(),
    )


def _usage(gateway, **params) -> dict:
    response = httpx.get(f"{gateway.base_url}/admin/usage", headers=gateway.headers, params=params)
    response.raise_for_status()
    return response.json()


async def _settled(gateway, key_id: str, answered: int) -> dict:
    """The usage report once every answer's settle (off the request path) landed."""
    for _ in range(200):
        report = _usage(gateway)
        rows = [r for r in report["data"] if r["key_id"] == key_id]
        if sum(r["requests"] for r in rows) >= answered:
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage of {key_id} never reached {answered} requests")


async def test_budget_holds_across_two_replicas_under_concurrency(priced_replicas) -> None:
    first, second = priced_replicas
    budget = round(10 * ANSWER_COST, 6)  # about ten answers
    created = await asyncio.to_thread(
        httpx.post,
        f"{first.base_url}/admin/keys",
        headers=first.headers,
        json={"name": "spend-" + uuid.uuid4().hex[:6], "budget": budget, "budget_window": "daily"},
    )
    created = created.json()
    key, key_id = created["key"], created["id"]
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(_ask(client, (first, second)[i % 2], key) for i in range(40))
        )
        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(ok) + len(refused) == 40
        assert refused and all(a.json()["error"]["code"] == "budget_exceeded" for a in refused)
        await _settled(first, key_id, len(ok))
        # Refunds may leave room for a few more; spend it until both replicas refuse.
        for _ in range(20):
            more = [await _ask(client, gw, key) for gw in (first, second)]
            ok += [a for a in more if a.status_code == 200]
            if all(a.status_code == 429 for a in more):
                break
            await _settled(first, key_id, len(ok))
        for answer in more:
            assert answer.status_code == 429
            assert answer.json()["error"]["code"] == "budget_exceeded"
            assert int(answer.headers["retry-after"]) >= 1
    report = await _settled(first, key_id, len(ok))
    expected = sum(
        a.json()["usage"]["prompt_tokens"] * 0.001 + a.json()["usage"]["completion_tokens"] * 0.002
        for a in ok
    )
    rows = [r for r in report["data"] if r["key_id"] == key_id]
    assert [(r["model"], r["key_name"]) for r in rows] == [(MOCK_LLM, created["name"])]
    assert rows[0]["spend"] == pytest.approx(expected, abs=1e-9)
    assert rows[0]["requests"] == len(ok)
    assert rows[0]["total_tokens"] == sum(a.json()["usage"]["total_tokens"] for a in ok)
    state = next(b for b in report["budgets"] if b["name"] == key_id)
    assert state["spent"] == pytest.approx(expected, abs=1e-9)
    # Within one reservation of the budget, and never over it.
    assert budget - RESERVATION < state["spent"] <= budget
    metrics = first.metrics_text() + second.metrics_text()
    assert f'gateway_spend_total{{model="{MOCK_LLM}"}}' in metrics


async def test_a_team_budget_is_shared_by_its_keys(priced_replicas) -> None:
    first, second = priced_replicas
    team = "team-" + uuid.uuid4().hex[:6]
    response = await asyncio.to_thread(
        httpx.put,
        f"{first.base_url}/admin/teams/{team}",
        headers=first.headers,
        # Room for two answers and one more worst-case reservation.
        json={"budget": round(2 * ANSWER_COST + RESERVATION, 6), "budget_window": "weekly"},
    )
    assert response.status_code == 200
    keys = [first.create_key(f"{team}-{i}", team=team) for i in range(2)]
    statuses = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(8):
            answer = await _ask(client, (first, second)[i % 2], keys[i % 2])
            statuses.append(answer.status_code)
            await _team_settled(first, team, statuses.count(200))
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "budget_exceeded"
                assert "team's weekly budget" in answer.json()["error"]["message"]
    # Three answers fit the team's budget in all, whichever key asked.
    assert statuses.count(200) == 3
    report = _usage(first)
    by_team = {row["team"]: row for row in report["by_team"]}
    assert by_team[team]["requests"] == 3


async def _team_settled(gateway, team: str, answered: int) -> None:
    for _ in range(200):
        rows = [r for r in _usage(gateway)["by_team"] if r["team"] == team]
        if answered == 0 or (rows and rows[0]["requests"] >= answered):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage of team {team} never reached {answered} requests")


def test_usage_needs_the_master_key_and_a_valid_range(priced_replicas) -> None:
    first, _ = priced_replicas
    client_key = first.create_key("usage-reader")
    url = f"{first.base_url}/admin/usage"
    forbidden = httpx.get(url, headers={"authorization": f"Bearer {client_key}"})
    assert forbidden.status_code == 403
    bad = httpx.get(url, headers=first.headers, params={"since": "yesterday-ish"})
    assert bad.status_code == 400
    assert "since" in bad.json()["error"]["message"]
    too_long = httpx.get(url, headers=first.headers, params={"since": 0})
    assert too_long.status_code == 400
    assert "retention" in too_long.json()["error"]["message"]
    assert httpx.get(f"{first.base_url}/healthz").status_code == 200


@pytest.fixture
async def limiter(redis_server):
    store = RedisStore(Settings(redis_url=redis_server.url))
    yield RateLimiter(store, closed_window_ttl=3600)
    await store.close()


async def test_current_budget_window_has_no_ttl_and_closed_ones_expire(
    limiter: RateLimiter, redis_server
) -> None:
    record = KeyRecord(id=f"key_{uuid.uuid4().hex[:12]}", name="windows", budget=1.0)
    current, previous = window_ids()[4:6]  # monthly, the default window
    client = redis_server.client()
    closed = f"gw:spend:{{{record.id}}}:{previous}"
    client.set(closed, 123)
    decision = await limiter.reserve(record, tokens=10, cost=400_000_000)
    assert decision.allowed and decision.key_budget_window == current
    counter = f"gw:spend:{{{record.id}}}:{current}"
    assert int(client.get(counter)) == 400_000_000
    assert client.ttl(counter) == -1  # never evicted while it counts
    assert 0 < client.ttl(closed) <= 3600
    refused = await limiter.reserve(record, tokens=10, cost=700_000_000)
    assert not refused.allowed and refused.limit == "budget_key"
    await limiter.settle(record, decision, 10)  # no answer: the whole cost comes back
    assert int(client.get(counter)) == 0


def test_budget_windows_are_utc_calendar_periods() -> None:
    # Wednesday 2026-12-30 23:00 UTC: the week began on Monday the 28th.
    moment = datetime(2026, 12, 30, 23, 0, tzinfo=UTC).timestamp()
    assert window_ids(moment) == [
        "d20261230", "d20261229", "w20261228", "w20261221", "m20261201", "m20261101",
    ]  # fmt: skip
    assert seconds_until_reset("daily", moment) == 3600
    assert seconds_until_reset("weekly", moment) == 4 * 86400 + 3600
    assert seconds_until_reset("monthly", moment) == 86400 + 3600  # into January
    prices = Prices.from_table({"m": ModelPrice(input_per_million=0.15, output_per_million=0.6)})
    assert prices.cost("m", 1_000_000, 1_000_000) == to_nano(0.75)
    assert prices.cost("unlisted", 10**6, 10**6) == 0
