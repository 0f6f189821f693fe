"""The user-level settings of the local stack, read from `.env` like docker compose.

`.env` is the one file every command reads (compose, `make dev`, `make eval`, the
gateway's CLI); the shell environment overrides it, as in compose. A value missing from
`.env` takes the field default below or, where `.env.example` renders an answer (the
serving backend, the semantic cache, OTLP export), the answer recorded in pyproject.toml:
either way `.env.example`'s documented value (a test keeps them, and compose's defaults,
in step). The secrets have no default:
`make env` (and the post-gen hook) write `.env` with random ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # Models
    llm_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    models_dir: Path = Path("./models")
    serving_backend: Literal["auto", "vllm", "transformers"] = "auto"
    vllm_python: str = ""
    llm_dtype: str = "auto"
    llm_max_model_len: str = "2048"
    llm_max_num_seqs: str = "16"
    llm_max_queue: str = "256"
    llm_quantization: str = "auto"
    embedder_dtype: str = "auto"
    embedder_max_num_seqs: str = "32"
    embedder_max_queue: str = "256"
    llm_tensor_parallel_size: str = "1"
    llm_gpu_memory_utilization: str = "0.75"
    embedder_gpu_memory_utilization: str = "0.15"
    llm_vllm_extra_args: str = ""
    # LoRA adapters (docs/adapters.md)
    adapters_dir: Path = Path("./adapters")
    llm_lora_modules: str = ""
    llm_max_loras: str = "4"
    llm_max_lora_rank: str = "16"
    llm_allow_runtime_lora_updating: str = "false"

    # Ports
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    llm_port: int = Field(default=8000, ge=1, le=65535)
    embedder_port: int = Field(default=8001, ge=1, le=65535)
    dev_redis_port: int = Field(default=6380, ge=1, le=65535)

    # Gateway
    gateway_master_key: str = ""
    gateway_environment: str = "development"
    gateway_semantic_cache_enabled: str = "false"
    gateway_capture_sample_rate: str = "0"
    openai_api_key: str = ""
    redis_password: str = ""

    # Telemetry: `make dev` runs no collector, so export stays off unless asked for.
    otel_sdk_disabled: str = "true"
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_protocol: str = "grpc"
    otel_exporter_otlp_headers: str = ""

    # How long to wait for each service's health endpoint (model loading dominates).
    dev_start_timeout: float = Field(default=900.0, gt=0)


def load_settings(root: Path, env_file: Path | None = None) -> DevSettings:
    """Settings for the project at `root`: defaults < the project's answers < .env (or
    env_file) < shell."""
    path = env_file or root / ".env"
    # `_env_file` is pydantic-settings' documented per-instance override.
    settings = DevSettings(_env_file=path if path.is_file() else None)  # type: ignore[call-arg]
    for name, value in answer_defaults(project_answers(root)).items():
        if name not in settings.model_fields_set:
            setattr(settings, name, value)
    if not settings.models_dir.is_absolute():
        settings.models_dir = (root / settings.models_dir).resolve()
    if not settings.adapters_dir.is_absolute():
        settings.adapters_dir = (root / settings.adapters_dir).resolve()
    return settings


def project_answers(root: Path) -> dict[str, str]:
    """The template answers the project was generated with (pyproject.toml's
    `[tool.genai-blueprint]`); empty when the table is missing or unreadable."""
    try:
        table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["genai-blueprint"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return {}
    return {key: str(value) for key, value in table.items()}


def answer_defaults(answers: dict[str, str]) -> dict[str, str]:
    """The settings whose documented value in `.env.example` depends on an answer, so a
    `.env` that leaves them out still runs what `.env.example` documents."""
    defaults: dict[str, str] = {}
    backend = answers.get("serving-backend")
    if backend in ("auto", "vllm", "transformers"):
        defaults["serving_backend"] = backend
    if answers.get("enable-semantic-cache") == "yes":
        defaults["gateway_semantic_cache_enabled"] = "true"
    if answers.get("observability") == "otlp-external":
        defaults["otel_sdk_disabled"] = "false"
    return defaults


PORT_VARIABLES: dict[str, str] = {
    "redis": "DEV_REDIS_PORT",
    "llm": "LLM_PORT",
    "embedder": "EMBEDDER_PORT",
    "gateway": "GATEWAY_PORT",
}
