"""Faults: Redis outages, dead upstreams, cut streams, client disconnects."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    GatewayProcess,
    MockUpstream,
    gateway_launcher,
    upstreams_env,
)
from tests.support.processes import free_port


def _chat(gateway: GatewayProcess, key: str | None = None, model: str = MOCK_LLM, **extra):
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key or gateway.master_key}"},
        json={"model": model, "messages": [{"role": "user", "content": "fault"}], **extra},
        timeout=10,
    )


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def routed(tmp_path_factory, redis_server):
    """A gateway with a dead upstream beside a live one, and fallbacks configured."""
    log_dir = tmp_path_factory.mktemp("routed")
    alive = MockUpstream("mock-alive", log_dir).start()
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    make, started = gateway_launcher(log_dir)
    upstreams = json.loads(
        upstreams_env(
            ("dead", dead_url, ["primary", "shared", "orphan"]),
            ("alive", alive.base_url, [MOCK_LLM, MOCK_EMBEDDER, "shared"]),
        )
    )
    try:
        gateway = make(
            redis_server.url,
            GATEWAY_UPSTREAMS=json.dumps(upstreams),
            GATEWAY_FALLBACKS=json.dumps({"primary": [MOCK_LLM]}),
            GATEWAY_RETRY_BACKOFF_SECONDS="0.01",
            # Plain Redis has no search module: the semantic cache must step aside.
            GATEWAY_SEMANTIC_CACHE_ENABLED="true",
            GATEWAY_EMBEDDING_MODEL=MOCK_EMBEDDER,
        )
        yield gateway, alive
    finally:
        for process in started:
            process.stop()
        alive.stop()


def test_refused_connection_falls_back_to_another_model(routed) -> None:
    gateway, _ = routed
    response = _chat(gateway, model="primary")
    assert response.status_code == 200
    assert response.json()["model"] == MOCK_LLM


def test_semantic_cache_without_search_module_warns_once_and_serves(routed) -> None:
    gateway, _ = routed
    for _ in range(3):
        response = _chat(gateway, temperature=0, messages=[{"role": "user", "content": "q"}])
        assert response.status_code == 200
    warnings = [
        line
        for line in gateway.log_path.read_text().splitlines()
        if "semantic cache disabled" in line
    ]
    assert len(warnings) == 1
    assert '"level":"warning"' in warnings[0]
    assert 'gateway_cache_requests_total{kind="semantic"' not in gateway.metrics_text()


def test_refused_connection_retries_on_another_upstream(routed) -> None:
    gateway, _ = routed
    statuses = [_chat(gateway, model="shared").status_code for _ in range(6)]
    assert statuses == [200] * 6
    assert 'gateway_upstream_errors_total{reason="connection",upstream="dead"}' in (
        gateway.metrics_text()
    )


def test_nothing_can_serve_gives_503_with_a_clear_message(routed) -> None:
    gateway, _ = routed
    response = _chat(gateway, model="orphan")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert "orphan" in error["message"]


def test_upstream_overloaded_is_retried_then_503(routed) -> None:
    gateway, alive = routed
    before = alive.stats()["requests"]
    alive.control("fail")
    try:
        response = _chat(gateway)
    finally:
        alive.control("ok")
    assert response.status_code == 503
    assert alive.stats()["requests"] - before == 3  # first try + GATEWAY_MAX_RETRIES (2)


def test_cut_stream_reaches_the_client_as_an_error(routed) -> None:
    gateway, alive = routed
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.master_key)
    alive.control("cut")
    try:
        with pytest.raises(openai.APIError) as raised:
            for _ in client.chat.completions.create(
                model=MOCK_LLM, messages=[{"role": "user", "content": "cut"}], stream=True
            ):
                pass
        with httpx.stream(
            "POST",
            f"{gateway.base_url}/v1/chat/completions",
            headers=gateway.headers,
            json={
                "model": MOCK_LLM,
                "messages": [{"role": "user", "content": "c"}],
                "stream": True,
            },
        ) as response:
            events = [line for line in response.iter_lines() if line.startswith("data:")]
    finally:
        alive.control("ok")
    assert "mid-stream" in str(raised.value) or "ended before" in str(raised.value)
    assert response.status_code == 200  # headers were already sent when it broke
    assert '"error"' in events[-1] and "stream_interrupted" in events[-1]
    assert not any(e.strip() == "data: [DONE]" for e in events)


def test_client_disconnect_cancels_the_upstream_request(routed) -> None:
    gateway, alive = routed
    alive.control("slow", chunk_delay_ms=100)
    try:
        cancelled_before = alive.stats()["cancelled"]
        completed_before = alive.stats()["completed"]
        with httpx.stream(
            "POST",
            f"{gateway.base_url}/v1/chat/completions",
            headers=gateway.headers,
            json={
                "model": MOCK_LLM,
                "messages": [{"role": "user", "content": "s"}],
                "stream": True,
            },
        ) as response:
            lines = response.iter_lines()
            received = [next(lines) for _ in range(3)]
        assert any(line.startswith("data:") for line in received)
        assert _wait_for(lambda: alive.stats()["cancelled"] > cancelled_before)
        assert alive.stats()["completed"] == completed_before
    finally:
        alive.control("ok", chunk_delay_ms=0)
    assert _wait_for(lambda: "gateway_in_flight_requests 0.0" in gateway.metrics_text())


def test_redis_outage_degrades_without_hanging(gateway_factory, redis_factory, mock_upstream):
    redis = redis_factory()
    env = {
        "GATEWAY_UPSTREAMS": upstreams_env(("mock", mock_upstream.base_url, [MOCK_LLM])),
        "GATEWAY_REDIS_BREAKER_RESET_SECONDS": "0.5",
    }
    fail_open, fail_closed = gateway_factory(
        redis.url, {**env, "GATEWAY_RATE_LIMIT_FAIL_OPEN": "false"}, **env
    )
    used_key = fail_open.create_key("used", rpm=1000)
    limited_key = fail_closed.create_key("limited", rpm=1000)
    unused_key = fail_open.create_key("never-used")
    assert _chat(fail_open, used_key, temperature=0).headers["x-cache"] == "miss"
    assert _chat(fail_closed, limited_key).status_code == 200

    redis.stop()
    # Keys verified recently are honoured from memory; limits fail open by default.
    for _ in range(5):
        served = _chat(fail_open, used_key, temperature=0)
        assert served.status_code == 200
        assert served.headers["x-cache"] == "miss"  # cache skipped, not an error
    assert _chat(fail_open).status_code == 200  # master key needs no Redis
    # A key this process never verified does not get in.
    refused = _chat(fail_open, unused_key)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "key_store_unavailable"
    assert _chat(fail_open, "sk-gw-made-up").status_code == 503
    # Fail-closed limits refuse instead.
    closed = _chat(fail_closed, limited_key)
    assert closed.status_code == 503
    assert closed.json()["error"]["code"] == "rate_limiter_unavailable"

    ready = httpx.get(f"{fail_open.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "degraded", "redis": "down", "upstreams": {"mock": "up"}}
    assert "gateway_rate_limit_skipped_total 5.0" in fail_open.metrics_text()

    redis.start()
    assert _wait_for(
        lambda: httpx.get(f"{fail_open.base_url}/readyz").json()["status"] == "ok", timeout=15
    )
    recovered = _chat(fail_open, temperature=0)
    assert recovered.status_code == 200
    assert _chat(fail_open, temperature=0).headers["x-cache"] == "hit"
