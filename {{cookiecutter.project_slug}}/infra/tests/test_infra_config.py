"""Stack config validation: defaults, and a clear message naming the key for every mistake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pulumi.runtime import config as runtime_config

from blueprint_infra.config import ConfigError, load_stack_config
from blueprint_infra.testing import PROJECT, stack_config

VALID = {
    "images": {"registry": "registry.example.com/acme"},
    "masterKey": "sk-test-master-key-0123456789",
    "redisPassword": "redis-password-0123456789",
}
SECRETS = ("masterKey", "redisPassword", "redisUrl", "hfToken")


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    yield
    runtime_config.set_all_config({}, [])


def load(values: dict[str, Any], secret_keys: tuple[str, ...] = SECRETS):
    runtime_config.set_all_config(stack_config(values), [f"{PROJECT}:{key}" for key in secret_keys])
    return load_stack_config(PROJECT)


def with_changes(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def test_defaults_describe_the_cpu_dev_stack() -> None:
    config, secrets = load(VALID)
    assert config.platform == "kubernetes"
    assert config.llm.accelerator == "cpu"
    assert config.llm.effective_backend == "transformers"
    assert config.llm.effective_startup_minutes == 60
    assert config.redis.mode == "in-cluster"
    assert secrets.master_key == VALID["masterKey"]


def test_gpu_defaults_to_vllm_and_a_ten_minute_startup() -> None:
    config, _ = load(with_changes(llm={"model": "m", "accelerator": "gpu"}))
    assert config.llm.effective_backend == "vllm"
    assert config.llm.effective_startup_minutes == 10
    assert config.llm.effective_resources.memory_limit == "32Gi"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (with_changes(llm={"model": "m", "replicas": -1}), "genai-app:llm.replicas"),
        (with_changes(llm={"model": "m", "accelerator": "tpu"}), "genai-app:llm.accelerator"),
        (with_changes(gateway={"replicaz": 2}), "genai-app:gateway.replicaz"),
        (with_changes(gateway={"replicas": 5, "maxReplicas": 2}), "genai-app:gateway"),
        (with_changes(namespace="Not_A_Name"), "genai-app:namespace"),
        (with_changes(redis={"storageSize": "lots"}), "genai-app:redis.storageSize"),
        (with_changes(keda={"enabled": True}), "prometheusUrl"),
        (with_changes(images={"tag": "1.0"}), "images.registry"),
        (
            with_changes(llm={"model": "m", "replicas": 2, "cache": {"type": "pvc"}}),
            "llm.cache.accessMode",
        ),
        (
            with_changes(platform="aws-eks", aws={"cacheEngineVersion": "7.2"}),
            "genai-app:aws",
        ),
        (
            with_changes(llm={"model": "m", "tolerations": [{"operator": "Exists"}]}),
            "genai-app:llm.tolerations[0].key",
        ),
        (with_changes(masterKey="short"), "genai-app:masterKey"),
        (with_changes(redisPassword="has/slash-0123456789"), "redisPassword"),
        (
            with_changes(gateway={"ingress": {"host": "h", "publicPaths": ["/"]}}),
            "genai-app:gateway.ingress",
        ),
        (
            with_changes(gateway={"ingress": {"host": "h", "publicPaths": ["/v1", "/admin"]}}),
            "would publish /admin",
        ),
        (with_changes(evals={"keyRpm": 0}), "genai-app:evals.keyRpm"),
        (
            with_changes(llm={"model": "m", "replicas": 2, "adapters": {"load": ["a"]}}),
            "llm.adapters.accessMode",
        ),
        (
            with_changes(llm={"model": "m", "adapters": {"load": ["a", "b"], "maxLoras": 1}}),
            "more than llm.adapters.maxLoras",
        ),
        (
            with_changes(llm={"model": "m", "adapters": {"load": ["../etc"]}}),
            "genai-app:llm.adapters.load[0]",
        ),
        (
            with_changes(embedder={"model": "m", "adapters": {}}),
            "served by llm only",
        ),
    ],
)
def test_bad_config_names_the_key(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(values)
    assert expected in str(caught.value)


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown stack config key 'genai-app:replica'"):
        load(with_changes(replica=3))


def test_secret_in_plain_text_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load(VALID, secret_keys=("redisPassword",))
    message = str(caught.value)
    assert "genai-app:masterKey" in message
    assert "pulumi config set --secret masterKey" in message


def test_missing_secrets_are_named() -> None:
    with pytest.raises(ConfigError, match="genai-app:masterKey"):
        load({"images": VALID["images"], "redisPassword": VALID["redisPassword"]})
    with pytest.raises(ConfigError, match="genai-app:redisPassword"):
        load({"images": VALID["images"], "masterKey": VALID["masterKey"]})
    external = {"images": VALID["images"], "masterKey": VALID["masterKey"]}
    with pytest.raises(ConfigError, match="genai-app:redisUrl"):
        load({**external, "redis": {"mode": "external"}})


def test_invalid_json_names_the_key() -> None:
    with pytest.raises(ConfigError, match="genai-app:gateway"):
        load(with_changes(gateway="{not json"))


def test_other_namespaces_are_ignored() -> None:
    runtime_config.set_all_config(
        {**stack_config(VALID), "aws:region": "eu-west-1", "kubernetes:context": "kind"},
        [f"{PROJECT}:{key}" for key in SECRETS],
    )
    config, _ = load_stack_config(PROJECT)
    assert config.images.registry == "registry.example.com/acme"
