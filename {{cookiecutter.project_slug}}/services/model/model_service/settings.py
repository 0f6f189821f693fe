"""Settings of one model-service instance (environment variables with the `MODEL_` prefix).

The same package serves the `llm` and the `embedder` instances; compose and `make dev`
map `.env`'s `LLM_MODEL` / `EMBEDDING_MODEL` onto each instance's `MODEL_*` values.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Task = Literal["generate", "embed"]
Backend = Literal["auto", "vllm", "transformers"]
DType = Literal["auto", "float32", "bfloat16", "float16"]

DEFAULT_LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_", extra="ignore")

    source: str = Field(
        default=DEFAULT_LLM,
        description="Hugging Face hub id, local model directory or local .gguf file.",
    )
    served_name: str | None = Field(
        default=None, description="Name clients send as `model`; defaults to the source's model id."
    )
    task: Task = "generate"
    backend: Backend = "auto"
    dtype: DType = Field(
        default="auto",
        description="auto = float16 on GPU; on CPU bfloat16 where the CPU has native "
        "bfloat16 (AMX, AVX-512 BF16), else float32 (model_service/precision.py).",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        description="Prompt + completion tokens; defaults to the model's own limit.",
    )
    max_num_seqs: int = Field(default=64, ge=1, description="Sequences generated together (batch).")
    max_queue: int = Field(
        default=256, ge=0, description="Requests allowed to wait beyond max_num_seqs before 503."
    )
    max_batch_tokens: int = Field(
        default=512,
        ge=16,
        description="transformers backend: tokens per forward pass (prefill chunk).",
    )
    kv_cache_gib: float = Field(
        default=1.0, gt=0, description="transformers backend: memory for the paged KV cache (GiB)."
    )
    num_threads: int = Field(
        default=0,
        ge=0,
        description="transformers backend: torch threads; 0 = one per usable CPU (within "
        "the cgroup quota) but one, leaving a core to the HTTP server and the host's other "
        "processes. On a dedicated host or pod set it to the CPU count.",
    )
    # Hostile input (docs/model-service.md, "Hostile input"): transformers backend.
    max_request_bytes: int = Field(
        default=16 * 2**20, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_prompt_chars: int | None = Field(
        default=None,
        ge=1,
        description="Characters a prompt may have before it is tokenised (400 above); "
        "default 16 per token of max_model_len.",
    )
    request_memory_mib: float | None = Field(
        default=None,
        gt=0,
        description="Per-request budget: KV cache for the prompt plus every output token "
        "(n x max_tokens), checked before admission; default the whole KV cache.",
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="Inputs one embeddings request may carry (OpenAI's limit)."
    )
    # LoRA adapters (docs/adapters.md): the same settings drive both backends.
    adapters_dir: Path = Field(
        default=Path("adapters"),
        validation_alias=AliasChoices("MODEL_ADAPTERS_DIR", "ADAPTERS_DIR"),
        description="The only folder adapters are loaded from (one folder per adapter).",
    )
    lora_modules: str = Field(
        default="",
        description="Adapters loaded at start: `name` (ADAPTERS_DIR/name) or `name=path`, "
        "separated by commas or spaces.",
    )
    max_loras: int = Field(
        default=4, ge=1, description="Adapters loaded at once (vLLM: --max-loras)."
    )
    max_lora_rank: int = Field(
        default=16, ge=1, description="Largest LoRA rank accepted (vLLM: --max-lora-rank)."
    )
    allow_runtime_lora_updating: bool = Field(
        default=False,
        description="Admin switch for POST /v1/load_lora_adapter and /v1/unload_lora_adapter "
        "(vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING); off, both answer 404.",
    )
    lora_kv_cache_gib: float = Field(
        default=0.25,
        gt=0,
        description="transformers backend: KV cache of each loaded adapter's engine (GiB).",
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    models_dir: Path = Field(
        default=Path("models"), validation_alias=AliasChoices("MODELS_DIR", "MODEL_MODELS_DIR")
    )

    # vLLM pass-through options.
    vllm_python: str = Field(
        default=sys.executable,
        description="Interpreter of the environment that has vLLM installed.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    quantization: str | None = Field(
        default=None,
        description="vLLM: awq, gptq, fp8, ...; transformers: int8 (weight-only), "
        "int8-dynamic (int8 activations too, CPU), int4 (weight-only), all torchao; "
        "auto or none: no quantisation (model_service/precision.py says why).",
    )
    tool_call_parser: str = Field(
        default="auto",
        description="vLLM: the tool-call parser for tool_choice=auto (hermes, mistral, "
        "llama3_json, ...); auto picks one for the model family, none turns tools off.",
    )
    vllm_extra_args: str = Field(
        default="", description="Extra vLLM server arguments (shell syntax)."
    )
    vllm_cpu_kvcache_space: int = Field(
        default=4,
        ge=1,
        description="GiB of KV cache vLLM reserves on CPU (VLLM_CPU_KVCACHE_SPACE).",
    )

    @field_validator("served_name", "quantization", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("lora_modules")
    @classmethod
    def _lora_modules_parse(cls, value: str) -> str:
        parse_lora_modules(value, Path("adapters"))  # refuse a malformed list at start
        return value

    @cached_property
    def adapters_at_start(self) -> list[LoraModule]:
        return parse_lora_modules(self.lora_modules, self.adapters_dir)

    @property
    def lora_enabled(self) -> bool:
        return bool(self.lora_modules.strip()) or self.allow_runtime_lora_updating

    @cached_property
    def vllm_extra_argv(self) -> list[str]:
        return shlex.split(self.vllm_extra_args)

    @property
    def model_name(self) -> str:
        """The name served in `/v1/models` and expected in requests."""
        return self.served_name or default_served_name(self.source)


@dataclass(frozen=True)
class LoraModule:
    name: str
    path: Path


def parse_lora_modules(value: str, adapters_dir: Path) -> list[LoraModule]:
    """`a, b=/adapters/b` -> [a at ADAPTERS_DIR/a, b at /adapters/b] (MODEL_LORA_MODULES)."""
    modules = []
    for item in value.replace(",", " ").split():
        name, _, path = item.partition("=")
        if not name or (item.endswith("=") and not path):
            raise ValueError(
                f"MODEL_LORA_MODULES: {item!r} is not `name` or `name=path` "
                "(entries separated by commas or spaces)"
            )
        modules.append(LoraModule(name, Path(path) if path else adapters_dir / name))
    names = [m.name for m in modules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"MODEL_LORA_MODULES names {', '.join(duplicates)} more than once")
    return modules


def default_served_name(source: str) -> str:
    path = Path(source).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.name
    return source
