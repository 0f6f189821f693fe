"""Issue 14 items 9 and 10 against real processes: a gateway, Redis, mock upstreams (a
local one, an "external provider" with an API key, and a dead one).

Each hostile request is followed by a normal one that must still be answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.request_fields import cache_salt
from tests.support.gateway import MOCK_LLM, GatewayProcess, MockUpstream, gateway_launcher
from tests.support.processes import free_port

PROVIDER_KEY = "sk-provider-secret-0123456789abcdef"
EXTERNAL = "ext-llm"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, redis_server) -> Iterator[dict[str, Any]]:
    log_dir = tmp_path_factory.mktemp("hardened")
    local = MockUpstream("mock-local", log_dir, models=[MOCK_LLM, "backup"]).start()
    external = MockUpstream("mock-external", log_dir, models=[EXTERNAL]).start()
    upstreams = [
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}", "models": ["primary"]},
        {"name": "local", "base_url": local.base_url, "models": [MOCK_LLM, "backup"]},
        {
            "name": "external",
            "base_url": external.base_url,
            "models": [EXTERNAL],
            "api_key_env": "TEST_PROVIDER_KEY",
        },
    ]
    make, started = gateway_launcher(log_dir)
    try:
        gateway = make(
            redis_server.url,
            GATEWAY_UPSTREAMS=json.dumps(upstreams),
            GATEWAY_FALLBACKS=json.dumps({"primary": ["backup"]}),
            GATEWAY_RETRY_BACKOFF_SECONDS="0.01",
            GATEWAY_CACHE_ENABLED="false",
            GATEWAY_FORWARD_FIELDS='["vendor_specific"]',
            GATEWAY_INVALID_KEYS_PER_CLIENT_PER_MINUTE="5",
            TEST_PROVIDER_KEY=PROVIDER_KEY,
        )
        yield {"gateway": gateway, "local": local, "external": external}
    finally:
        for process in started:
            process.stop()
        local.stop()
        external.stop()


def _chat(gateway: GatewayProcess, key: str | None = None, **extra: Any) -> httpx.Response:
    body = {"model": MOCK_LLM, "messages": [{"role": "user", "content": "hello"}], **extra}
    headers = {"authorization": f"Bearer {key}"} if key else gateway.headers
    return httpx.post(f"{gateway.base_url}/v1/chat/completions", headers=headers, json=body)


def _assert_still_serving(gateway: GatewayProcess) -> None:
    response = _chat(gateway)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chat_template", "{{ raise_exception('x') }}"),
        ("kv_transfer_params", {"do_remote_decode": True}),
        ("vllm_xargs", {"a": 1}),
        ("priority", -100),
        ("request_id", "someone-elses"),
        ("cache_salt", "another-tenants-salt"),
        ("chat_template_kwargs", {"chat_template": "{{ 1 }}"}),
    ],
)
def test_engine_control_fields_are_refused_by_name(hardened, field: str, value: Any) -> None:
    gateway = hardened["gateway"]
    response = _chat(gateway, **{field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "field_not_allowed" and error["param"].startswith(field)
    _assert_still_serving(gateway)


def test_known_fields_pass_unknown_ones_are_dropped_unless_listed(hardened) -> None:
    gateway, local = hardened["gateway"], hardened["local"]
    known = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"42": -1},
        "n": 1,
        "seed": 7,
        "stop": ["\n"],
        "max_completion_tokens": 5,
        "user": "u1",
        "top_k": 5,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "min_tokens": 1,
        "ignore_eos": False,
        "stop_token_ids": [2],
        "structured_outputs": {"choice": ["a", "b"]},
        "chat_template_kwargs": {"enable_thinking": False},
    }
    extra = {"vendor_specific": {"nested": [1, None]}, "surprise": 1, "mm_processor_kwargs": {}}
    assert _chat(gateway, **known, **extra).status_code == 200
    received = local.last_request()
    assert {name: received.get(name) for name in known} == known
    assert received["vendor_specific"] == extra["vendor_specific"]  # GATEWAY_FORWARD_FIELDS
    assert "surprise" not in received and "mm_processor_kwargs" not in received
    embedded = httpx.post(
        f"{gateway.base_url}/v1/completions",
        headers=gateway.headers,
        json={"model": MOCK_LLM, "prompt": "a", "echo": True, "suffix": "b", "dimensions": 3},
    )
    assert embedded.status_code == 200
    sent = local.last_request()
    assert sent["echo"] is True and sent["suffix"] == "b" and "dimensions" not in sent


def test_cache_salt_is_per_tenant_and_only_for_self_hosted_upstreams(hardened) -> None:
    gateway, local, external = hardened["gateway"], hardened["local"], hardened["external"]
    key_a, key_b = gateway.create_key("salt-a"), gateway.create_key("salt-b")
    assert _chat(gateway, key_a).status_code == 200
    salt_a = local.last_request()["cache_salt"]
    assert _chat(gateway, key_b).status_code == 200
    salt_b = local.last_request()["cache_salt"]
    assert salt_a != salt_b
    assert _chat(gateway, key_a).status_code == 200
    assert local.last_request()["cache_salt"] == salt_a  # stable: the prefix cache still works
    keys = httpx.get(f"{gateway.base_url}/admin/keys", headers=gateway.headers).json()
    key_id = next(k["id"] for k in keys["data"] if k["name"] == "salt-a")
    assert salt_a == cache_salt(key_id) and key_a not in salt_a
    assert _chat(gateway, key_a, model=EXTERNAL).status_code == 200
    assert "cache_salt" not in external.last_request()


def test_fallbacks_honour_the_keys_allowed_models(hardened) -> None:
    gateway = hardened["gateway"]
    only_primary = gateway.create_key("only-primary", models=["primary"])
    refused = _chat(gateway, only_primary, model="primary")
    assert refused.status_code == 503, refused.text  # `backup` is not this key's to use
    both = gateway.create_key("primary-and-backup", models=["primary", "backup"])
    served = _chat(gateway, both, model="primary")
    assert served.status_code == 200 and served.json()["model"] == "backup"
    _assert_still_serving(gateway)


@pytest.mark.parametrize(("mode", "status"), [("reject", 400), ("unauthorized", 502)])
def test_provider_errors_never_carry_the_provider_key(hardened, mode: str, status: int) -> None:
    gateway, external = hardened["gateway"], hardened["external"]
    external.control(mode)
    try:
        response = _chat(gateway, model=EXTERNAL)
    finally:
        external.control("ok")
    assert response.status_code == status, response.text
    assert PROVIDER_KEY not in response.text and "sk-provider" not in response.text
    assert "echo_headers" not in response.text and "request_headers" not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if mode == "reject":
        assert (error["param"], error["code"]) == ("messages", "provider_says_no")
        assert "[redacted]" in error["message"]
    assert _chat(gateway, model=EXTERNAL).status_code == 200
    _assert_still_serving(gateway)


def test_an_invalid_key_flood_is_limited_per_client_and_keeps_redis_healthy(hardened) -> None:
    gateway = hardened["gateway"]
    statuses = [_chat(gateway, f"sk-gw-bogus-{i % 2}").status_code for i in range(12)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    ready = httpx.get(f"{gateway.base_url}/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] == "up", ready.text
    _assert_still_serving(gateway)  # the master key is valid: never limited
