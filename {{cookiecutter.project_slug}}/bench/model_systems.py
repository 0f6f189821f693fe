"""The serving systems the model benchmark compares, each started as a real server."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ManagedProcess, free_port, source_path

LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SERVICE_DIR = Path(__file__).resolve().parents[1] / "services" / "model"


@dataclass(frozen=True)
class System:
    """One server configuration: which system, which dtype, how to start it."""

    name: str  # transformers | transformers-serve | vllm
    dtype: str  # the configuration: float32, bfloat16, int8, int8-dynamic, int4
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    model: str = LLM_ID  # the `model` field requests carry
    health_path: str = "/health"
    accepts_ignore_eos: bool = True
    startup_timeout: float = 900.0

    @property
    def label(self) -> str:
        return f"{self.name} ({self.dtype})"

    @property
    def structured_outputs(self) -> bool:
        """Whether it takes `response_format` json_schema (`transformers serve` does not)."""
        return self.name in ("transformers", "vllm")


def model_dir(models_dir: Path) -> Path:
    return models_dir / LLM_ID.replace("/", "--")


#: our backend's configurations: name -> (MODEL_DTYPE, MODEL_QUANTIZATION)
CONFIGS = {
    "float32": ("float32", ""),
    "bfloat16": ("bfloat16", ""),
    "int8": ("float32", "int8"),
    "int8-dynamic": ("float32", "int8-dynamic"),
    "int4": ("float32", "int4"),
}


def our_server(models_dir: Path, config: str, port: int, max_num_seqs: int = 64) -> System:
    dtype, quantization = CONFIGS[config]
    env = {
        "MODEL_BACKEND": "transformers",
        "MODEL_SOURCE": LLM_ID,
        "MODEL_DTYPE": dtype,
        "MODEL_QUANTIZATION": quantization,
        "MODEL_HOST": "127.0.0.1",
        "MODEL_PORT": str(port),
        "MODEL_MAX_MODEL_LEN": "2048",
        "MODEL_MAX_NUM_SEQS": str(max_num_seqs),
        # Each system has the machine to itself here, as a pod has its CPU limit (the
        # Kubernetes Deployment sets the same); the service's own default keeps a core free.
        "MODEL_NUM_THREADS": os.environ.get("MODEL_NUM_THREADS", str(len(os.sched_getaffinity(0)))),
        "MODELS_DIR": str(models_dir),
        "PYTHONPATH": source_path("services/model"),
    }
    argv = [sys.executable, "-m", "model_service", "serve"]
    return System("transformers", config, argv, env)


def kv_blocks(dtype: str, gib: float = 1.0, block: int = 64) -> int:
    """Blocks of `block` tokens in `gib` GiB of SmolLM2-135M KV cache (MODEL_KV_CACHE_GIB)."""
    layers, kv_heads, head_dim = 30, 3, 64
    per_token = 2 * layers * kv_heads * head_dim * (4 if dtype == "float32" else 2)
    return int(gib * 2**30) // per_token // block


def transformers_serve(models_dir: Path, dtype: str, port: int) -> System:
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    path = str(model_dir(models_dir))
    argv = [cli, "serve", "--continuous-batching", "--dtype", dtype, "--device", "cpu"]
    # Left alone it sizes its KV cache from all free RAM (about 20 GB here) and is
    # OOM-killed on the first request; give it our backend's cache and batch budget.
    argv += ["--cb-block-size", "64", "--cb-num-blocks", str(kv_blocks(dtype))]
    argv += ["--cb-max-batch-tokens", "512"]
    argv += ["--host", "127.0.0.1", "--port", str(port), path]
    # It loads the model on the first request, not at startup: warm-up covers that.
    return System("transformers-serve", dtype, argv, model=path, accepts_ignore_eos=False)


def vllm_cpu(models_dir: Path, python: str, port: int, max_num_seqs: int = 64) -> System:
    argv = [python, "-m", "vllm.entrypoints.openai.api_server"]
    argv += ["--model", str(model_dir(models_dir)), "--served-model-name", LLM_ID]
    argv += ["--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--max-model-len", "2048", "--max-num-seqs", str(max_num_seqs)]
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    return System("vllm", "float32", argv, env)


def start(system: System, log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start `system` and wait until it answers its health check; returns (process, url)."""
    port = int(system.argv[system.argv.index("--port") + 1]) if "--port" in system.argv else 0
    if not port:
        port = int(system.env["MODEL_PORT"])
    process = ManagedProcess(system.name + "-" + system.dtype, system.argv, log_dir, system.env)
    process.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(base_url + system.health_path, timeout=system.startup_timeout)
    except BaseException:
        process.stop()  # also on Ctrl-C: never leave a server behind
        raise
    return process, base_url


def build_systems(
    names: list[str], models_dir: Path, vllm_python: str | None, configs: list[str]
) -> list[System]:
    """Our backend in each of `configs`; `transformers serve` in its float dtypes among
    them; vLLM-CPU in float32 (its only correct configuration on CPUs without bf16)."""
    systems: list[System] = []
    for name in names:
        if name == "vllm":
            if vllm_python:
                systems.append(vllm_cpu(models_dir, vllm_python, free_port()))
        elif name == "transformers":
            systems += [our_server(models_dir, config, free_port()) for config in configs]
        elif name == "transformers-serve":
            dtypes = [c for c in configs if c in ("float32", "bfloat16")]
            systems += [transformers_serve(models_dir, d, free_port()) for d in dtypes]
        else:
            raise ValueError(f"unknown system {name!r}")
    return systems
