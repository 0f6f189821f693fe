"""The local stack as data: each service's command, environment, health check and order.

The names, the `MODEL_*` / `GATEWAY_*` variables and the health endpoints are the same as
in compose.yaml; only the addresses differ (127.0.0.1 and the host ports instead of
service names and container ports).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from devstack.settings import DevSettings

# Source folders of the project's packages, so they run without being installed.
PACKAGE_DIRS = (".", "common", "gateway", "services/model", "evals")


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    port: int
    after: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"  # where it listens (the preflight checks the port there)


def model_folder(models_dir: Path, model: str) -> Path:
    """Where `make models` puts a model: MODELS_DIR/<id with "/" replaced by "--">."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    return models_dir / model.strip("/").replace("/", "--")


def base_env(root: Path, inherited: Mapping[str, str]) -> dict[str, str]:
    """The shell's environment without MODEL_* (each model instance gets its own) and with
    the project's source folders on PYTHONPATH."""
    env = {k: v for k, v in inherited.items() if not k.startswith("MODEL_") and k != "MODELS_DIR"}
    paths = [str((root / folder).resolve()) for folder in PACKAGE_DIRS]
    if inherited.get("PYTHONPATH"):
        paths.append(inherited["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the multiplexer as they happen
    return env


def otel_env(settings: DevSettings, service_name: str) -> dict[str, str]:
    """Trace export of one service, as compose passes it (every service, one rule: on when
    OTEL_SDK_DISABLED is not true and an endpoint is set)."""
    env = {"OTEL_SERVICE_NAME": service_name, "OTEL_SDK_DISABLED": settings.otel_sdk_disabled}
    if settings.otel_exporter_otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = settings.otel_exporter_otlp_endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = settings.otel_exporter_otlp_protocol
        if settings.otel_exporter_otlp_headers:
            env["OTEL_EXPORTER_OTLP_HEADERS"] = settings.otel_exporter_otlp_headers
    return env


def _model_env(
    settings: DevSettings, model: str, task: str, port: int, tuning: Mapping[str, str]
) -> dict[str, str]:
    env = {
        "MODEL_SOURCE": model,
        "MODEL_SERVED_NAME": model,
        "MODEL_TASK": task,
        "MODEL_BACKEND": settings.serving_backend,
        "MODEL_HOST": "127.0.0.1",
        "MODEL_PORT": str(port),
        "MODELS_DIR": str(settings.models_dir),
        **otel_env(settings, "llm" if task == "generate" else "embedder"),
    }
    if settings.vllm_python:
        env["MODEL_VLLM_PYTHON"] = settings.vllm_python
    env.update({key: value for key, value in tuning.items() if value != ""})
    return env


def llm_env(settings: DevSettings) -> dict[str, str]:
    return _model_env(
        settings,
        settings.llm_model,
        "generate",
        settings.llm_port,
        {
            "MODEL_DTYPE": settings.llm_dtype,
            "MODEL_MAX_MODEL_LEN": settings.llm_max_model_len,
            "MODEL_MAX_NUM_SEQS": settings.llm_max_num_seqs,
            "MODEL_MAX_QUEUE": settings.llm_max_queue,
            "MODEL_QUANTIZATION": settings.llm_quantization,
            "MODEL_TENSOR_PARALLEL_SIZE": settings.llm_tensor_parallel_size,
            "MODEL_GPU_MEMORY_UTILIZATION": settings.llm_gpu_memory_utilization,
            "MODEL_VLLM_EXTRA_ARGS": settings.llm_vllm_extra_args,
            "MODEL_ADAPTERS_DIR": str(settings.adapters_dir),
            "MODEL_LORA_MODULES": settings.llm_lora_modules,
            "MODEL_MAX_LORAS": settings.llm_max_loras,
            "MODEL_MAX_LORA_RANK": settings.llm_max_lora_rank,
            "MODEL_ALLOW_RUNTIME_LORA_UPDATING": settings.llm_allow_runtime_lora_updating,
        },
    )


def embedder_env(settings: DevSettings) -> dict[str, str]:
    return _model_env(
        settings,
        settings.embedding_model,
        "embed",
        settings.embedder_port,
        {
            "MODEL_DTYPE": settings.embedder_dtype,
            "MODEL_MAX_NUM_SEQS": settings.embedder_max_num_seqs,
            "MODEL_MAX_QUEUE": settings.embedder_max_queue,
            "MODEL_GPU_MEMORY_UTILIZATION": settings.embedder_gpu_memory_utilization,
        },
    )


def upstreams(settings: DevSettings) -> list[dict[str, object]]:
    return [
        {
            "name": "llm",
            "base_url": f"http://127.0.0.1:{settings.llm_port}",
            "models": [settings.llm_model],
        },
        {
            "name": "embedder",
            "base_url": f"http://127.0.0.1:{settings.embedder_port}",
            "models": [settings.embedding_model],
        },
    ]


def redis_url(settings: DevSettings, with_password: bool = True) -> str:
    """The dev Redis; the password goes in the URL only where a client needs it (never
    in health URLs, which are printed and passed on command lines)."""
    auth = f":{quote(settings.redis_password, safe='')}@" if with_password else ""
    return f"redis://{auth}127.0.0.1:{settings.dev_redis_port}/0"


def reachable_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def gateway_env(settings: DevSettings) -> dict[str, str]:
    return {
        "GATEWAY_HOST": settings.gateway_host,
        "GATEWAY_PORT": str(settings.gateway_port),
        "GATEWAY_ENVIRONMENT": settings.gateway_environment,
        "GATEWAY_MASTER_KEY": settings.gateway_master_key,
        "GATEWAY_REDIS_URL": redis_url(settings),
        "GATEWAY_UPSTREAMS": json.dumps(upstreams(settings)),
        "GATEWAY_EMBEDDING_MODEL": settings.embedding_model,
        "GATEWAY_SEMANTIC_CACHE_ENABLED": settings.gateway_semantic_cache_enabled,
        "GATEWAY_CAPTURE_SAMPLE_RATE": settings.gateway_capture_sample_rate,
        "GATEWAY_RAG_LLM_MODEL": settings.llm_model,
        "GATEWAY_RAG_EMBEDDINGS_BASE_URL": f"http://127.0.0.1:{settings.embedder_port}/v1",
        "OPENAI_API_KEY": settings.openai_api_key,
        **otel_env(settings, "gateway"),
    }


def plan(settings: DevSettings, root: Path, python: str = sys.executable) -> list[Service]:
    """The services of `make dev`, in dependency order."""
    data_dir = root / ".dev" / "redis"
    gateway_host = reachable_host(settings.gateway_host)
    return [
        Service(
            name="redis",
            argv=[python, "-m", "devstack.redis", str(settings.dev_redis_port), str(data_dir)],
            # Read by devstack.redis into a 0600 config file, never put on a command line.
            env={"REDIS_PASSWORD": settings.redis_password},
            health_url=redis_url(settings, with_password=False),
            port=settings.dev_redis_port,
        ),
        Service(
            name="llm",
            argv=[python, "-m", "model_service", "serve"],
            env=llm_env(settings),
            health_url=f"http://127.0.0.1:{settings.llm_port}/health",
            port=settings.llm_port,
        ),
        Service(
            name="embedder",
            argv=[python, "-m", "model_service", "serve"],
            env=embedder_env(settings),
            health_url=f"http://127.0.0.1:{settings.embedder_port}/health",
            port=settings.embedder_port,
        ),
        Service(
            name="gateway",
            argv=[python, "-m", "gateway", "serve"],
            env=gateway_env(settings),
            health_url=f"http://{gateway_host}:{settings.gateway_port}/readyz",
            port=settings.gateway_port,
            after=["redis", "llm", "embedder"],
            host=settings.gateway_host,
        ),
    ]
