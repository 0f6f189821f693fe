"""Settings for the fine-tuning job, read from the environment (and `.env`).

`MODELS_DIR` and `ADAPTERS_DIR` are the user-level names every part of the project
shares (compose and `make` pass them on); the `FINETUNE_*` spellings exist for
deployments that keep each job's variables in its own namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DATASETS_DIR = PACKAGE_DIR / "datasets"


class FinetuneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINETUNE_", env_file=".env", extra="ignore")

    base_model: str = Field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        validation_alias=AliasChoices("FINETUNE_BASE_MODEL", "LLM_MODEL"),
        description="Base model: a hub id prepared in MODELS_DIR (`make models`) or a directory.",
    )
    models_dir: Path = Field(
        default=Path("models"),
        validation_alias=AliasChoices("MODELS_DIR", "FINETUNE_MODELS_DIR"),
        description="Where `make models` prepared the base models.",
    )
    adapters_dir: Path = Field(
        default=Path("adapters"),
        validation_alias=AliasChoices("ADAPTERS_DIR", "FINETUNE_ADAPTERS_DIR"),
        description="Where adapters are written, one folder per adapter name.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: the GPU when there is one, else the CPU."
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for torch; 0: torch's default (one per core). Use 1 on a "
        "host whose cores are busy with other work (docs/adapters.md).",
    )
