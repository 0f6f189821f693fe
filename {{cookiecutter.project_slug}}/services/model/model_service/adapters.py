"""LoRA adapters on the served base model (transformers backend), loaded by name.

An adapter is a folder that `python -m finetune train` wrote (PEFT's
`adapter_config.json` + `adapter_model.safetensors`, usually under ADAPTERS_DIR). The
registry wraps the served base model in one `peft.PeftModel` holding every loaded
adapter; the base weights are shared and each adapter adds only its low-rank matrices.

- `load(name, path)` checks the folder (inside the adapters root, a LoRA adapter, trained
  for the served base: `base_model_name_or_path` must equal the served model id) and
  adds it; `unload(name)` removes it; `get(name)` raises a 404 `APIError` naming an
  unknown adapter, as vLLM does.
- `active(name)` is a context manager that runs the model with that adapter (or the
  base, for `None`). PEFT's active adapter is state of the whole model, so callers must
  not run two different adapters at once on the same registry: one forward pass per
  adapter at a time (see docs/adapters.md for how the serving loop schedules that).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_service.errors import APIError

# The same rule as the finetune job's adapter names (they become served model names).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AdapterNotFoundError(APIError):
    def __init__(self, name: str) -> None:
        super().__init__(404, f"The adapter `{name}` is not loaded.", "model")


def invalid_adapter(message: str) -> APIError:
    return APIError(400, message, "lora_path")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    base_model: str
    rank: int


class AdapterRegistry:
    """The adapters loaded on one base model, by name."""

    def __init__(self, base_model: Any, base_id: str, root: Path, max_adapters: int = 8) -> None:
        self._base = base_model
        self._base_id = base_id
        self._root = root.resolve()
        self._max = max_adapters
        self._peft: Any = None
        self._adapters: dict[str, AdapterInfo] = {}
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The model to run: the PEFT wrapper once an adapter is loaded, else the base."""
        return self._peft if self._peft is not None else self._base

    def names(self) -> list[str]:
        return sorted(self._adapters)

    def get(self, name: str) -> AdapterInfo:
        info = self._adapters.get(name)
        if info is None:
            raise AdapterNotFoundError(name)
        return info

    def load(self, name: str, path: Path | None = None) -> AdapterInfo:
        """Load the adapter in `path` (default: ROOT/NAME) under `name`."""
        if not NAME_PATTERN.fullmatch(name):
            raise invalid_adapter(f"Invalid adapter name {name!r}: letters, digits, '.', '_', '-'.")
        folder = self._checked_folder(path if path is not None else self._root / name)
        info = self._checked_info(name, folder)
        with self._lock:
            if name in self._adapters:
                raise invalid_adapter(f"The adapter `{name}` is already loaded.")
            if len(self._adapters) >= self._max:
                raise invalid_adapter(f"At most {self._max} adapters can be loaded at once.")
            self._attach(name, folder)
            self._adapters[name] = info
        return info

    def unload(self, name: str) -> None:
        with self._lock:
            self.get(name)
            del self._adapters[name]
            if self._adapters:
                self._peft.delete_adapter(name)
            else:
                # PEFT keeps at least one adapter; with none left, serve the bare base again.
                self._base = self._peft.unload()
                self._peft = None

    @contextmanager
    def active(self, name: str | None) -> Iterator[Any]:
        """The model with adapter `name` active (`None`: the base model alone)."""
        if name is None:
            context = self._peft.disable_adapter() if self._peft is not None else nullcontext()
            with context:
                yield self.model
            return
        self.get(name)
        self._peft.set_adapter(name)
        yield self._peft

    def _attach(self, name: str, folder: Path) -> None:
        from peft import PeftModel

        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, folder, adapter_name=name)
            self._peft.eval()
        else:
            self._peft.load_adapter(folder, adapter_name=name)

    def _checked_folder(self, path: Path) -> Path:
        folder = path.resolve()
        if not folder.is_relative_to(self._root):
            raise invalid_adapter(f"Adapters are loaded from {self._root} only, not {path}.")
        if not (folder / "adapter_config.json").is_file():
            raise invalid_adapter(f"{path} has no adapter_config.json: not a PEFT adapter.")
        return folder

    def _checked_info(self, name: str, folder: Path) -> AdapterInfo:
        try:
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise invalid_adapter(f"{folder}/adapter_config.json is unreadable: {error}") from None
        if config.get("peft_type") != "LORA":
            raise invalid_adapter(f"{folder} is a {config.get('peft_type')} adapter, not LoRA.")
        base = str(config.get("base_model_name_or_path") or "")
        if base != self._base_id:
            raise invalid_adapter(
                f"The adapter `{name}` was trained for {base!r}; this server serves "
                f"{self._base_id!r}."
            )
        return AdapterInfo(name=name, path=folder, base_model=base, rank=int(config.get("r", 0)))
