"""The online evals job (docs/feedback.md) in a stack that turns it on: a Deployment on
the evals image with its own derived key, registered by its own Job, allowed to read
/admin/exchanges by name, with egress only to the gateway (and the collector)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from blueprint_infra.program import run
from blueprint_infra.testing import Captured, policy_violations, run_program, schema_errors

CONFIG: dict[str, Any] = {
    "platform": "kubernetes",
    "namespace": "genai-dev",
    "images": {"registry": "registry.example.com/acme", "tag": "0.1.0"},
    "masterKey": "sk-test-master-key-0123456789",
    "redisPassword": "redis-password-0123456789",
    "gateway": {"captureSampleRate": 0.25},
    "evals": {"online": True, "onlineIntervalSeconds": 30},
}


@pytest.fixture(scope="module")
def stack() -> Captured:
    return run_program(run, CONFIG, secret_keys=("masterKey", "redisPassword"))


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_the_stack_with_online_evals_meets_the_policies_and_the_schema(stack: Captured) -> None:
    assert policy_violations(stack) == []
    assert schema_errors(stack) == []


def test_online_evals_runs_with_its_own_key_never_the_master_key(stack: Captured) -> None:
    from blueprint_infra.evals_key import ONLINE_PURPOSE, derive_evals_key, key_hash

    deployment = stack.one("kubernetes:apps/v1:Deployment", "online-evals").manifest
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["online"]
    env = env_of(deployment)
    assert env["EVALS_API_KEY"]["secretKeyRef"] == {
        "name": "evals-secrets",
        "key": "ONLINE_EVALS_API_KEY",
    }
    assert env["EVALS_ONLINE_INTERVAL_S"] == "30.0"
    secret = stack.one("kubernetes:core/v1:Secret", "evals-secrets").manifest["stringData"]
    key = secret["ONLINE_EVALS_API_KEY"]
    assert key == derive_evals_key(CONFIG["masterKey"], ONLINE_PURPOSE)
    assert key not in (secret["EVALS_API_KEY"], CONFIG["masterKey"])
    register = env_of(stack.one("kubernetes:batch/v1:Job", "online-evals-key").manifest)
    assert register["EVALS_KEY_NAME"] == "online-evals"
    assert register["EVALS_KEY_SHA256"] == key_hash(key)
    assert CONFIG["masterKey"] not in json.dumps(deployment)


def test_the_gateway_captures_and_lets_the_online_key_read_exchanges(stack: Captured) -> None:
    gateway = env_of(stack.one("kubernetes:apps/v1:Deployment", "gateway").manifest)
    assert gateway["GATEWAY_CAPTURE_SAMPLE_RATE"] == "0.25"
    assert json.loads(gateway["GATEWAY_EXCHANGE_READER_KEYS"]) == ["online-evals"]


def test_online_evals_may_reach_only_the_gateway_and_its_key_job_only_redis(
    stack: Captured,
) -> None:
    def egress(name: str) -> dict[str, Any]:
        return stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", name).manifest

    names = {r.name for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert {"allow-online-evals-egress", "allow-online-evals-key-egress"} <= names, names
    redis = stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "allow-redis").manifest
    assert "online-evals-key" in json.dumps(redis["spec"])
    text = json.dumps(egress("allow-online-evals-egress")["spec"])
    assert '"gateway"' in text and "6379" not in text
    assert "6379" in json.dumps(egress("allow-online-evals-key-egress")["spec"])
