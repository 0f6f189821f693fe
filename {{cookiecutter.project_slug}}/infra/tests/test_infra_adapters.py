"""LoRA adapters on Kubernetes (docs/adapters.md): `llm.adapters` mounts a volume of
adapters read-only at /adapters and passes the adapters to load and the limits, under
Pulumi mocks; the objects still pass the strict schema and every policy."""

from __future__ import annotations

from typing import Any

import pytest

from blueprint_infra.program import run
from blueprint_infra.testing import Captured, policy_violations, run_program, schema_errors

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
CONFIG: dict[str, Any] = {
    "platform": "kubernetes",
    "namespace": "genai-dev",
    "images": {"registry": "registry.example.com/acme", "tag": "0.1.0"},
    "masterKey": "sk-test-master-key-0123456789",
    "redisPassword": "redis-password-0123456789",
    "llm": {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "adapters": {"load": ["codeword", "support-v2"], "size": "2Gi", "maxLoras": 3},
    },
}
SECRETS = ("masterKey", "redisPassword")


@pytest.fixture(scope="module")
def stack() -> Captured:
    return run_program(run, CONFIG, secret_keys=SECRETS)


def model_container(stack: Captured, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = stack.one(DEPLOYMENT, name).manifest["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_llm_mounts_the_adapters_claim_read_only_and_loads_the_listed_adapters(
    stack: Captured,
) -> None:
    pod, model = model_container(stack, "llm")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["adapters"]["persistentVolumeClaim"] == {"claimName": "llm-adapters"}
    mounts = {m["name"]: m for m in model["volumeMounts"]}
    assert mounts["adapters"] == {"name": "adapters", "mountPath": "/adapters", "readOnly": True}
    env = {item["name"]: item.get("value") for item in model["env"]}
    assert env["MODEL_ADAPTERS_DIR"] == "/adapters"
    assert env["MODEL_LORA_MODULES"] == "codeword,support-v2"
    assert (env["MODEL_MAX_LORAS"], env["MODEL_MAX_LORA_RANK"]) == ("3", "16")
    assert env["MODEL_ALLOW_RUNTIME_LORA_UPDATING"] == "false"
    claim = stack.one(CLAIM, "llm-adapters").manifest
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The init container that downloads weights never sees the adapters.
    prepare = pod["initContainers"][0]
    assert "adapters" not in {m["name"] for m in prepare["volumeMounts"]}


def test_lora_settings_stay_off_the_embedder(stack: Captured) -> None:
    pod, model = model_container(stack, "embedder")
    assert "adapters" not in {v["name"] for v in pod["volumes"]}
    assert not [e for e in model["env"] if "LORA" in e["name"]]


def test_adapter_stack_passes_the_schema_and_the_policies(stack: Captured) -> None:
    assert schema_errors(stack) == []
    assert policy_violations(stack) == []


def test_an_existing_adapters_claim_is_mounted_not_created() -> None:
    adapters = {"existingClaim": "finetune-output", "load": ["codeword"]}
    config = {**CONFIG, "llm": {**CONFIG["llm"], "replicas": 2, "adapters": adapters}}
    captured = run_program(run, config, secret_keys=SECRETS)
    pod = captured.one(DEPLOYMENT, "llm").manifest["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["adapters"]["persistentVolumeClaim"] == {"claimName": "finetune-output"}
    assert not [c for c in captured.of_type(CLAIM) if c.name == "llm-adapters"]
