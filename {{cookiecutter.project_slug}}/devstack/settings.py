"""The user-level settings of the local stack, read from `.env` like docker compose.

`.env` is the one file every command reads (compose, `make dev`, `make eval`, the
gateway's CLI); the shell environment overrides it, as in compose. A value missing from
`.env` takes the field default below, which equals `.env.example`'s documented value
(a test keeps the two, and compose's defaults, in step). The secrets have no default:
`make env` (and the post-gen hook) write `.env` with random ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, cast

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
    llm_quantization: str = ""
    embedder_dtype: str = "auto"
    embedder_max_num_seqs: str = "32"
    embedder_max_queue: str = "256"
    llm_tensor_parallel_size: str = "1"
    llm_gpu_memory_utilization: str = "0.75"
    embedder_gpu_memory_utilization: str = "0.15"
    llm_vllm_extra_args: str = ""

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
    """Settings for the project at `root`: defaults < .env (or env_file) < shell."""
    path = env_file or root / ".env"
    # `_env_file` is pydantic-settings' documented per-instance override.
    settings = DevSettings(_env_file=path if path.is_file() else None)  # type: ignore[call-arg]
    if "serving_backend" not in settings.model_fields_set:
        settings.serving_backend = project_backend(root)
    if not settings.models_dir.is_absolute():
        settings.models_dir = (root / settings.models_dir).resolve()
    return settings


Backend = Literal["auto", "vllm", "transformers"]


def project_backend(root: Path) -> Backend:
    """The `serving_backend` answer the project was generated with (its pyproject.toml),
    so a `.env` without SERVING_BACKEND still runs the backend `.env.example` documents."""
    try:
        table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["genai-blueprint"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "auto"
    answer = table.get("serving-backend", "auto")
    return cast(Backend, answer) if answer in ("auto", "vllm", "transformers") else "auto"


PORT_VARIABLES: dict[str, str] = {
    "redis": "DEV_REDIS_PORT",
    "llm": "LLM_PORT",
    "embedder": "EMBEDDER_PORT",
    "gateway": "GATEWAY_PORT",
}
