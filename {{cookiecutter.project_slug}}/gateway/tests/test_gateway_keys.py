"""API keys: hashed at rest, the CLI, expiry, revocation, model allow-lists, caps."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.keys import hash_key
from gateway.redis_store import masked_url
from tests.support.gateway import MOCK_LLM, GatewayProcess
from tests.support.processes import free_port


def _cli(redis_url: str, *args: str):
    # In-process through typer's runner: the same code path as `python -m gateway
    # keys ...` without paying the interpreter start-up for every command.
    from typer.testing import CliRunner

    from gateway.cli import app

    return CliRunner().invoke(app, ["keys", *args], env={"GATEWAY_REDIS_URL": redis_url})


def _chat(gateway: GatewayProcess, key: str, model: str = MOCK_LLM, **extra):
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "k"}], **extra},
    )


def test_cli_create_list_revoke(mock_gateway: GatewayProcess, redis_search_server) -> None:
    created = _cli(redis_search_server.url, "create", "--name", "cli-test", "--rpm", "100")
    assert created.exit_code == 0, created.output
    api_key = created.stdout.strip().splitlines()[-1]
    assert api_key.startswith("sk-gw-")
    assert _chat(mock_gateway, api_key).status_code == 200

    # Stored hashed only: the plain key appears nowhere in Redis.
    client = redis_search_server.client()
    stored = [client.hgetall(name) for name in client.scan_iter("gw:key:*")]
    assert any(record.get("hash") == hash_key(api_key) for record in stored)
    assert all(api_key not in str(record) for record in stored)

    listed = _cli(redis_search_server.url, "list")
    assert listed.exit_code == 0 and "cli-test" in listed.stdout
    assert api_key not in listed.stdout

    revoked = _cli(redis_search_server.url, "revoke", "cli-test")
    assert revoked.exit_code == 0 and "Revoked" in revoked.stdout
    # Replicas reuse a verified key for GATEWAY_KEY_REFRESH_SECONDS (2 s by default).
    deadline = time.monotonic() + 5
    while _chat(mock_gateway, api_key).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.2)
    assert _cli(redis_search_server.url, "revoke", "cli-test").exit_code == 1


def test_missing_and_invalid_keys(mock_gateway: GatewayProcess) -> None:
    url = f"{mock_gateway.base_url}/v1/chat/completions"
    missing = httpx.post(url, json={"model": MOCK_LLM, "messages": []})
    invalid = _chat(mock_gateway, "sk-not-a-key")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert invalid.status_code == 401 and invalid.json()["error"]["type"] == "authentication_error"
    assert "sk-not-a-key" not in invalid.text


def test_expired_key_is_refused(mock_gateway: GatewayProcess) -> None:
    key = mock_gateway.create_key("short-lived", expires_in_seconds=1)
    assert _chat(mock_gateway, key).status_code == 200
    time.sleep(1.2)
    assert _chat(mock_gateway, key).status_code == 401


def test_model_allow_list(mock_gateway: GatewayProcess) -> None:
    key = mock_gateway.create_key("embed-only", models=["mock-embed"])
    refused = _chat(mock_gateway, key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_denied"
    models = httpx.get(
        f"{mock_gateway.base_url}/v1/models", headers={"authorization": f"Bearer {key}"}
    ).json()
    assert [m["id"] for m in models["data"]] == ["mock-embed"]


@pytest.mark.parametrize(("requested", "status"), [(32, 200), (33, 400)])
def test_max_tokens_cap_per_key(mock_gateway: GatewayProcess, requested: int, status: int) -> None:
    key = mock_gateway.create_key("capped", max_tokens=32)
    response = _chat(mock_gateway, key, max_tokens=requested)
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["param"] == "max_tokens"


def test_admin_endpoints_need_the_master_key(mock_gateway: GatewayProcess) -> None:
    key = mock_gateway.create_key("not-admin")
    response = httpx.get(
        f"{mock_gateway.base_url}/admin/keys", headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    listed = httpx.get(f"{mock_gateway.base_url}/admin/keys", headers=mock_gateway.headers)
    assert "not-admin" in {k["name"] for k in listed.json()["data"]}
    assert "key" not in listed.json()["data"][0]


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert masked_url("rediss://user:pw@host/1") == "rediss://user:***@host/1"
    assert masked_url("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"


def test_cli_error_masks_the_redis_password() -> None:
    # Nothing listens on a fresh free port: the CLI reports Redis as unavailable.
    url = f"redis://default:hunter2-secret@127.0.0.1:{free_port()}/0"
    result = _cli(url, "list")
    assert result.exit_code == 1
    assert "hunter2-secret" not in result.output
    assert "default:***@127.0.0.1" in result.output
