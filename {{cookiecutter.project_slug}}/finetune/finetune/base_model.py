"""Find the base model on disk and identify it for the manifest.

`--base` is a directory, or a model id prepared under MODELS_DIR by `make models`
(folder name: the id with `/` replaced by `--`, as the model service names it). The
job never downloads: training runs where the served model's files already are. The
base is identified by the hub revision when the folder records one and always by a
content hash of its config and weights, so an adapter can be matched to the exact
weights it was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from finetune.dataset import file_sha256

WEIGHT_PATTERNS = ("config.json", "*.safetensors")


class BaseModelError(ValueError):
    pass


@dataclass(frozen=True)
class BaseModelInfo:
    id: str
    path: Path
    revision: str | None
    sha256: str


def folder_name(model_id: str) -> str:
    return model_id.strip("/").replace("/", "--")


def resolve_base(base: str, models_dir: Path) -> BaseModelInfo:
    path = Path(base).expanduser()
    if not path.is_dir():
        path = models_dir / folder_name(base)
    if not (path / "config.json").is_file():
        raise BaseModelError(
            f"base model {base!r} not found: neither a model directory nor prepared in "
            f"MODELS_DIR ({models_dir}); run `make models` or set MODELS_DIR"
        )
    return BaseModelInfo(id=base, path=path, revision=hub_revision(path), sha256=content_hash(path))


def content_hash(path: Path) -> str:
    """sha256 over the names and sha256s of config.json and the safetensors files."""
    files = sorted({file for pattern in WEIGHT_PATTERNS for file in path.glob(pattern)})
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def hub_revision(path: Path) -> str | None:
    """The commit `huggingface_hub.snapshot_download(local_dir=...)` recorded, if any."""
    metadata = path / ".cache" / "huggingface" / "download" / "config.json.metadata"
    if not metadata.is_file():
        return None
    first_line = metadata.read_text(encoding="utf-8").splitlines()[:1]
    return first_line[0].strip() or None if first_line else None
