"""LoRA adapters on the served base (model_service.adapters), on the tiny model: load by
name, run with each adapter or the base, unload, and refuse what is not a matching adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from model_service.adapters import AdapterNotFoundError, AdapterRegistry
from model_service.errors import APIError

BASE_ID = "tiny-org/tiny-chat"


def save_adapter(base_dir: Path, folder: Path, seed: int, base_id: str = BASE_ID) -> Path:
    """A rank-4 LoRA adapter with random (non-zero) weights, saved as PEFT saves it."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
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
    return root


@pytest.fixture
def registry(tiny_model_dir: Path, adapters_root: Path) -> AdapterRegistry:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return AdapterRegistry(base, BASE_ID, adapters_root, max_adapters=2)


def logits(registry: AdapterRegistry, name: str | None) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with registry.active(name) as model, torch.no_grad():
        return model(input_ids=ids).logits


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


def test_unloaded_adapter_is_a_404_naming_it_and_the_base_is_restored(
    registry: AdapterRegistry,
) -> None:
    base = logits(registry, None)
    registry.load("alpha")
    registry.load("beta")
    beta = logits(registry, "beta")
    registry.unload("alpha")
    assert registry.names() == ["beta"]
    with pytest.raises(AdapterNotFoundError, match="`alpha`") as raised:
        logits(registry, "alpha")
    assert raised.value.status == 404
    assert torch.allclose(logits(registry, "beta"), beta)
    registry.unload("beta")
    assert registry.names() == []
    assert torch.allclose(logits(registry, None), base)
    with pytest.raises(AdapterNotFoundError):
        registry.unload("beta")
    registry.load("alpha")  # loading again after everything was unloaded works
    assert registry.names() == ["alpha"]


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("other-base", None, "trained for 'org/another-model'"),
        ("missing", None, "no adapter_config.json"),
        ("../alpha", None, "Invalid adapter name"),
        ("escape", Path("/etc"), "are loaded from"),
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
    with pytest.raises(APIError, match="already loaded"):
        registry.load("alpha")
    registry.load("beta")
    broken = adapters_root / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(APIError, match="unreadable"):
        registry.load("broken")
    save_adapter(tiny_model_dir, adapters_root / "gamma", seed=4)
    with pytest.raises(APIError, match="At most 2 adapters"):
        registry.load("gamma")
    config = json.loads((adapters_root / "gamma" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_ID
    assert registry.names() == ["alpha", "beta"]
    assert logits(registry, "beta").shape[-1] == logits(registry, None).shape[-1]
