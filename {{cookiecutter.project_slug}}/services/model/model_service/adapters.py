"""LoRA adapters served next to the base model (transformers backend), each by its name.

An adapter is a folder that `python -m finetune train` wrote (PEFT's
`adapter_config.json` + `adapter_model.safetensors`) under ADAPTERS_DIR.

How an adapter is served: transformers' continuous batching packs every scheduled
request into one row of tokens, and PEFT picks its adapter per batch row, so one batch
cannot mix adapters. Each loaded adapter therefore gets its own `GenerationEngine`
(its own continuous-batching loop) on its own copy of the module tree whose weight
tensors are the base's: the copy shares every base parameter (no second copy of the
weights) and PEFT injects the adapter's low-rank matrices into the copy only. Memory per
adapter is its LoRA weights plus its KV cache (MODEL_LORA_KV_CACHE_GIB); every adapter
keeps continuous batching, and requests to different adapters run side by side
(docs/adapters.md has the measured cost). The weights are never merged: merging would
write into the shared base tensors.

- `load(name, path)` checks the folder (inside the adapters root, a LoRA adapter of at
  most the allowed rank, trained for the served base: `base_model_name_or_path` must be
  the served model's id) and starts its engine; `unload(name)` stops it; `engine(name)`
  raises a 404 naming an adapter that is not loaded, as vLLM does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_service.errors import APIError
from model_service.generation import GenerationEngine, LoopFailed, kv_bytes_per_token

# The same rule as the finetune job's adapter names (they become served model names).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AdapterNotFoundError(APIError):
    def __init__(self, name: str) -> None:
        super().__init__(404, f"The model `{name}` does not exist.", "model")


def invalid_adapter(message: str, param: str = "lora_path") -> APIError:
    return APIError(400, message, param)


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    base_model: str
    rank: int


@dataclass(frozen=True)
class AdapterLimits:
    root: Path
    max_adapters: int = 4
    max_rank: int = 16
    kv_cache_gib: float = 0.25


@dataclass
class LoadedAdapter:
    info: AdapterInfo
    engine: GenerationEngine


class AdapterRegistry:
    """The adapters loaded on one base engine, by name."""

    def __init__(self, base: GenerationEngine, base_ids: set[str], limits: AdapterLimits) -> None:
        self._base = base
        self._base_ids = base_ids
        self._limits = dataclasses.replace(limits, root=limits.root.resolve())
        self._loaded: dict[str, LoadedAdapter] = {}
        self._reserved: set[str] = set()  # names being loaded right now
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._limits.root

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def adapters(self) -> list[AdapterInfo]:
        return [self._loaded[name].info for name in self.names()]

    def engine(self, name: str) -> GenerationEngine:
        loaded = self._loaded.get(name)
        if loaded is None:
            raise AdapterNotFoundError(name)
        return loaded.engine

    def load(self, name: str, path: Path | None = None) -> AdapterInfo:
        """Load the adapter in `path` (default: ROOT/NAME) as `name` (blocking: a thread)."""
        self._check_name(name)
        info = self._checked_info(name, self._checked_folder(path or self.root / name))
        self._reserve(name)
        try:
            engine = self._start_engine(info.path)
        finally:
            with self._lock:
                self._reserved.discard(name)
        with self._lock:
            self._loaded[name] = LoadedAdapter(info, engine)
        return info

    def unload(self, name: str) -> GenerationEngine:
        """Stop serving `name`: requests still running on it fail with a 503 (retry). The
        returned engine is stopped; close it off the event loop."""
        with self._lock:
            loaded = self._loaded.pop(name, None)
        if loaded is None:
            raise APIError(404, f"The lora adapter '{name}' cannot be found.", "lora_name")
        loaded.engine.fail_in_flight(LoopFailed(f"the adapter `{name}` was unloaded"))
        return loaded.engine

    def close(self) -> None:
        """Unload every adapter; their loops stop side by side (each takes a moment)."""
        engines = [self.unload(name) for name in self.names()]
        if engines:
            with ThreadPoolExecutor(max_workers=len(engines)) as pool:
                list(pool.map(GenerationEngine.close, engines))

    def _check_name(self, name: str) -> None:
        if name in self._base_ids:
            raise invalid_adapter(
                f"The lora adapter '{name}' conflicts with a served base model.", "lora_name"
            )
        if not NAME_PATTERN.fullmatch(name):
            raise invalid_adapter(
                f"Invalid adapter name {name!r}: letters, digits, '.', '_', '-' (at most 64).",
                "lora_name",
            )

    def _reserve(self, name: str) -> None:
        with self._lock:
            if name in self._loaded or name in self._reserved:
                raise invalid_adapter(
                    f"The lora adapter '{name}' has already been loaded.", "lora_name"
                )
            if len(self._loaded) + len(self._reserved) >= self._limits.max_adapters:
                raise invalid_adapter(
                    f"At most {self._limits.max_adapters} adapters can be loaded at once "
                    "(MODEL_MAX_LORAS); unload one first.",
                    "lora_name",
                )
            self._reserved.add(name)

    def _start_engine(self, folder: Path) -> GenerationEngine:
        base = self._base
        model = shared_weights_model(base.model, folder)
        kv_tokens = int(self._limits.kv_cache_gib * 2**30) // kv_bytes_per_token(model)
        options = dataclasses.replace(
            base.options, kv_cache_tokens=max(base.options.max_model_len, kv_tokens)
        )
        return GenerationEngine(model, base.tokenizer, options, base.metrics)

    def _checked_folder(self, path: Path) -> Path:
        try:  # a NUL byte or an over-long name raises instead of answering False
            folder = path.resolve()
            inside = folder.is_relative_to(self.root)
            has_config = inside and (folder / "adapter_config.json").is_file()
            has_weights = has_config and any(folder.glob("adapter_model.*"))
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise invalid_adapter(f"Invalid adapter path: {reason}.") from None
        if not inside:
            raise invalid_adapter(f"Adapters are loaded from {self.root} only, not {path}.")
        if not has_config:
            raise invalid_adapter(f"{path} has no adapter_config.json: not a PEFT adapter.")
        if not has_weights:
            raise invalid_adapter(f"{path} has no adapter_model weights: not a PEFT adapter.")
        return folder

    def _checked_info(self, name: str, folder: Path) -> AdapterInfo:
        try:
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            raise invalid_adapter(f"{folder}/adapter_config.json is unreadable: {error}") from None
        if config.get("peft_type") != "LORA":
            raise invalid_adapter(f"{folder} is a {config.get('peft_type')} adapter, not LoRA.")
        base = str(config.get("base_model_name_or_path") or "")
        if base not in self._base_ids:
            served = " or ".join(repr(i) for i in sorted(self._base_ids))
            raise invalid_adapter(
                f"The adapter `{name}` was trained for {base!r}; this server serves {served}."
            )
        rank = config.get("r")
        if not isinstance(rank, int) or not 1 <= rank <= self._limits.max_rank:
            raise invalid_adapter(
                f"The adapter `{name}` has LoRA rank {rank!r}; this server accepts ranks 1 to "
                f"{self._limits.max_rank} (MODEL_MAX_LORA_RANK)."
            )
        return AdapterInfo(name=name, path=folder, base_model=base, rank=rank)


def shared_weights_model(base: Any, folder: Path) -> Any:
    """A copy of `base`'s modules that uses the same parameter tensors, with the LoRA
    adapter in `folder` injected into the copy only (PEFT, unmerged)."""
    from peft import PeftModel

    shared = {id(parameter): parameter for parameter in base.parameters()}
    clone = copy.deepcopy(base, memo=shared)
    try:
        wrapped = PeftModel.from_pretrained(clone, folder, is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as error:
        raise invalid_adapter(f"{folder} does not fit the served model: {error}") from None
    return wrapped.get_base_model().eval()
