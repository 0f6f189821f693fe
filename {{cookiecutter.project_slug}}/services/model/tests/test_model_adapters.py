"""LoRA adapters on the served base (model_service.adapters), on the tiny model: load by
name, each on its own engine sharing the base weights, unload, and refuse what is not a
matching adapter. The HTTP routes are tested on real processes in test_model_lora_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from model_service.adapters import AdapterLimits, AdapterNotFoundError, AdapterRegistry
from model_service.errors import APIError
from model_service.generation import GenerationEngine
from model_service.metrics import ServiceMetrics

BASE_ID = "tiny-org/tiny-chat"


def save_adapter(
    base_dir: Path, folder: Path, seed: int, base_id: str = BASE_ID, rank: int = 4
) -> Path:
    """A LoRA adapter with random (non-zero) weights, saved as PEFT saves it."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=rank, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_id
    peft_model.save_pretrained(folder, save_embedding_layers=False)
    return folder


@pytest.fixture(scope="module")
def adapters_root(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    save_adapter(tiny_model_dir, root / "alpha", seed=1)
    save_adapter(tiny_model_dir, root / "beta", seed=2)
    save_adapter(tiny_model_dir, root / "other-base", seed=3, base_id="org/another-model")
    save_adapter(tiny_model_dir, root / "tiny", seed=5)
    save_adapter(tiny_model_dir, root / "wide", seed=6, rank=16)
    return root


@pytest.fixture
def registry(tiny_model_dir: Path, adapters_root: Path) -> Iterator[AdapterRegistry]:
    engine = GenerationEngine.load(
        tiny_model_dir, "float32", ServiceMetrics("tiny"), 64, 2, 2, 64, kv_cache_gib=0.01
    )
    limits = AdapterLimits(adapters_root, max_adapters=2, max_rank=8, kv_cache_gib=0.01)
    registry = AdapterRegistry(engine, {"tiny", BASE_ID}, limits)
    yield registry
    registry.close()
    engine.close()


def logits(registry: AdapterRegistry, name: str | None) -> torch.Tensor:
    model = registry.engine(name).model if name else base_engine(registry).model
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 9, 14, 20]])).logits


def base_engine(registry: AdapterRegistry) -> GenerationEngine:
    return registry._base


def test_adapters_load_by_name_and_each_changes_the_output(registry: AdapterRegistry) -> None:
    base = logits(registry, None)
    info = registry.load("alpha")
    registry.load("beta")
    assert registry.names() == ["alpha", "beta"]
    assert (info.base_model, info.rank) == (BASE_ID, 4)
    alpha, beta = logits(registry, "alpha"), logits(registry, "beta")
    assert not torch.allclose(alpha, base) and not torch.allclose(beta, base)
    assert not torch.allclose(alpha, beta)
    # The base answers as before with adapters loaded, and each adapter is stable.
    assert torch.allclose(logits(registry, None), base)
    assert torch.allclose(logits(registry, "alpha"), alpha)


def test_adapter_engines_share_the_base_weights(registry: AdapterRegistry) -> None:
    registry.load("alpha")
    base_model, adapted = base_engine(registry).model, registry.engine("alpha").model
    base_layer = base_model.model.layers[0].self_attn.q_proj
    lora_layer = adapted.model.layers[0].self_attn.q_proj
    assert lora_layer.base_layer.weight is base_layer.weight  # one tensor, not a copy
    assert not hasattr(base_layer, "lora_A")  # the adapter went into the copy only
    assert registry.engine("alpha") is not base_engine(registry)  # its own batching loop


def test_unloaded_adapter_is_a_404_naming_it_and_the_base_is_restored(
    registry: AdapterRegistry,
) -> None:
    base = logits(registry, None)
    registry.load("alpha")
    registry.load("beta")
    beta = logits(registry, "beta")
    registry.unload("alpha").close()
    assert registry.names() == ["beta"]
    with pytest.raises(AdapterNotFoundError, match="`alpha`") as raised:
        logits(registry, "alpha")
    assert raised.value.status == 404
    assert torch.allclose(logits(registry, "beta"), beta)
    registry.unload("beta").close()
    assert registry.names() == []
    assert torch.allclose(logits(registry, None), base)
    with pytest.raises(APIError, match="'beta' cannot be found") as missing:
        registry.unload("beta")
    assert missing.value.status == 404
    registry.load("alpha")  # loading again after everything was unloaded works
    assert registry.names() == ["alpha"]


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("other-base", None, "trained for 'org/another-model'"),
        ("missing", None, "no adapter_config.json"),
        ("../alpha", None, "Invalid adapter name"),
        ("escape", Path("/etc"), "are loaded from"),
        ("tiny", None, "conflicts with a served base model"),
        ("wide", None, "LoRA rank 16; this server accepts ranks 1 to 8"),
    ],
)
def test_adapters_that_do_not_fit_are_refused_with_a_400(
    registry: AdapterRegistry, name: str, path: Path | None, message: str
) -> None:
    with pytest.raises(APIError, match=message) as raised:
        registry.load(name, path)
    assert raised.value.status == 400
    assert registry.names() == []


def test_adapter_limits_duplicates_and_broken_configs(
    registry: AdapterRegistry, adapters_root: Path, tiny_model_dir: Path
) -> None:
    registry.load("alpha")
    with pytest.raises(APIError, match="already been loaded"):
        registry.load("alpha")
    registry.load("beta")
    broken = adapters_root / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "adapter_config.json").write_text("{not json")
    (broken / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(APIError, match="unreadable"):
        registry.load("broken")
    save_adapter(tiny_model_dir, adapters_root / "gamma", seed=4)
    with pytest.raises(APIError, match="At most 2 adapters"):
        registry.load("gamma")
    assert registry.names() == ["alpha", "beta"]
