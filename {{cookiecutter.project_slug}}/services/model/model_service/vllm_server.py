"""Command line and environment of the official vLLM OpenAI server for our settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from model_service.settings import ModelSettings
from model_service.tracing import otlp_protocol, tracing_requested

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def otlp_traces_endpoint(env: Mapping[str, str]) -> str | None:
    """The endpoint for vLLM's `--otlp-traces-endpoint`, if tracing is on (the gateway's
    rule, model_service.tracing). vLLM hands it to the exporter as is, so the generic
    endpoint gets the `/v1/traces` path OTLP/HTTP expects, as the OpenTelemetry SDK would."""
    if not tracing_requested(env):
        return None
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    if otlp_protocol(env) == "grpc":
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def vllm_argv(
    settings: ModelSettings,
    model_dir: Path,
    gpu: bool,
    env: Mapping[str, str],
    tool_args: list[str] | None = None,
) -> list[str]:
    argv = [
        settings.vllm_python,
        "-m",
        VLLM_SERVER_MODULE,
        "--model",
        str(model_dir),
        "--served-model-name",
        settings.model_name,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
    ]
    # vLLM's "auto" means bfloat16 on CPU, which gives wrong output for small models on
    # CPUs without native bf16 math; float32 is the safe CPU default.
    dtype = settings.dtype if settings.dtype != "auto" or gpu else "float32"
    argv += ["--dtype", dtype]
    if gpu:
        argv += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    if settings.max_model_len:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if settings.quantization and settings.quantization not in ("auto", "none"):
        argv += ["--quantization", settings.quantization]
    if settings.task == "embed":
        argv += ["--runner", "pooling", "--convert", "embed"]
    endpoint = otlp_traces_endpoint(env)
    if endpoint:
        argv += ["--otlp-traces-endpoint", endpoint]
    return argv + lora_args(settings) + (tool_args or []) + settings.vllm_extra_argv


def lora_args(settings: ModelSettings) -> list[str]:
    """vLLM's LoRA flags from the settings both backends share (docs/adapters.md)."""
    if not settings.lora_enabled or settings.task != "generate":
        return []
    argv = [
        "--enable-lora",
        "--max-loras",
        str(settings.max_loras),
        "--max-lora-rank",
        str(settings.max_lora_rank),
    ]
    modules = [f"{m.name}={m.path.resolve()}" for m in settings.adapters_at_start]
    return argv + (["--lora-modules", *modules] if modules else [])


def vllm_env(settings: ModelSettings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    merged = dict(os.environ if env is None else env)
    merged.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.vllm_cpu_kvcache_space))
    if settings.allow_runtime_lora_updating and settings.task == "generate":
        merged["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if otlp_traces_endpoint(merged):
        # vLLM reads only the traces variable (and defaults to grpc); pin the protocol
        # the endpoint was chosen for, so OTEL_EXPORTER_OTLP_PROTOCOL works as usual.
        merged["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = otlp_protocol(merged)
    return merged
