"""One fine-tuning run, from a dataset file to `ADAPTERS_DIR/NAME`.

The adapter is written into a hidden sibling folder and moved into place only when the
adapter, manifest and plot are all there, so a crashed or interrupted run never leaves
a half-written adapter that a server could load. An existing adapter of the same name
is replaced only with `overwrite`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.base_model import resolve_base
from finetune.dataset import file_sha256, load_conversations
from finetune.manifest import (
    LOSS_PLOT_FILE,
    DatasetInfo,
    build_manifest,
    plot_loss,
    write_manifest,
)
from finetune.settings import FinetuneSettings
from finetune.trainer import Hyperparameters, StepCallback, pick_device, train

# Adapter names become served model names and folder names: keep them to safe characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class JobError(ValueError):
    pass


@dataclass(frozen=True)
class TrainRequest:
    dataset: Path
    name: str
    base: str
    hyper: Hyperparameters
    overwrite: bool = False


def run_training(
    request: TrainRequest, settings: FinetuneSettings, on_step: StepCallback | None = None
) -> tuple[Path, dict[str, Any]]:
    """Train, write adapter + manifest + plot, and return the folder and the manifest."""
    if not NAME_PATTERN.fullmatch(request.name):
        raise JobError(
            f"invalid adapter name {request.name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    target = settings.adapters_dir / request.name
    if target.exists() and not request.overwrite:
        raise JobError(f"adapter {request.name!r} already exists at {target} (--overwrite)")
    conversations = load_conversations(request.dataset)
    base = resolve_base(request.base, settings.models_dir)
    dataset = DatasetInfo(
        path=request.dataset, sha256=file_sha256(request.dataset), rows=len(conversations)
    )
    device = pick_device(settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    settings.adapters_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{request.name}.", dir=settings.adapters_dir))
    try:
        result = train(base, conversations, request.hyper, staging, device, on_step)
        manifest = build_manifest(request.name, base, dataset, request.hyper, result)
        write_manifest(staging, manifest)
        plot_loss(result.losses, f"{request.name} on {base.id}", staging / LOSS_PLOT_FILE)
        _publishable(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, manifest


def _publishable(folder: Path) -> None:
    """Readable by a server running as another user; PEFT's boilerplate card removed."""
    (folder / "README.md").unlink(missing_ok=True)  # the manifest describes the adapter
    folder.chmod(0o755)  # mkdtemp makes the folder private
    for file in folder.iterdir():
        file.chmod(0o644)
