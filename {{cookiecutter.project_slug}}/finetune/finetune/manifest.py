"""The adapter's manifest (`manifest.json`) and its loss curve (`loss.png`).

The manifest says what the adapter is: the base model (id, hub revision when known,
content hash of its weights), the dataset (path, sha256, rows), the hyper-parameters,
the per-step training loss, where and how long it trained, the library versions, and
when it was created. It sits beside PEFT's `adapter_config.json` and
`adapter_model.safetensors`, so the folder is self-describing wherever it is copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from finetune.base_model import BaseModelInfo
from finetune.trainer import Hyperparameters, TrainResult

MANIFEST_FILE = "manifest.json"
LOSS_PLOT_FILE = "loss.png"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    sha256: str
    rows: int


def build_manifest(
    name: str,
    base: BaseModelInfo,
    dataset: DatasetInfo,
    hyper: Hyperparameters,
    result: TrainResult,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": {"id": base.id, "revision": base.revision, "sha256": base.sha256},
        "dataset": {"path": str(dataset.path), "sha256": dataset.sha256, "rows": dataset.rows},
        "hyperparameters": hyper.as_dict(),
        "training": {
            "steps": len(result.losses),
            "loss": result.losses,
            "first_loss": result.losses[0] if result.losses else None,
            "final_loss": result.losses[-1] if result.losses else None,
            "device": result.device,
            "dtype": result.dtype,
            "seconds": round(result.seconds, 1),
        },
        "files": {"loss_plot": LOSS_PLOT_FILE},
        "versions": {lib: version(lib) for lib in ("peft", "transformers", "torch")},
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2) + "\n"
    (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")


def read_manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text("utf-8"))
    return manifest


def plot_loss(losses: list[float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (assistant tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
