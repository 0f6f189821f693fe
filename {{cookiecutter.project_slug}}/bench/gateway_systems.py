"""The systems the gateway benchmark compares, each a real process on this machine:
the mock upstream (direct), this gateway (with Redis), LiteLLM's proxy (in its own
virtual environment, installed on first use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from devstack.redis import server_command
from tests.support.processes import ManagedProcess, free_port, source_path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
LITELLM_VERSION = "1.100.0"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
MODEL = "mock-llm"
MASTER_KEY = "sk-bench-master"


@dataclass
class System:
    name: str
    base_url: str
    key: str
    process: ManagedProcess | None = None

    def rss_mb(self) -> float | None:
        if self.process is None or not self.process.alive():
            return None
        root = psutil.Process(self.process.pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return round(total / 2**20, 1)


def ensure_litellm(log: Callable[[str], object]) -> Path:
    """LiteLLM's proxy in bench/.venv-litellm (created once; git-ignored)."""
    python = LITELLM_VENV / "bin" / "python"
    marker = LITELLM_VENV / f".litellm-{LITELLM_VERSION}"
    if marker.exists():
        return LITELLM_VENV / "bin" / "litellm"
    if not python.exists():
        log(f"creating {LITELLM_VENV}")
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(LITELLM_VENV)], check=True
        )
        subprocess.run(
            [str(python), "-m", "ensurepip", "--upgrade"], check=True, capture_output=True
        )
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (a few minutes, once)")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    marker.touch()
    return LITELLM_VENV / "bin" / "litellm"


@contextmanager
def mock_upstream(log_dir: Path, chunks: int = 16) -> Iterator[System]:
    port = free_port()
    process = ManagedProcess(
        "mock-upstream",
        [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(port),
         "--model", MODEL, "--chunks", str(chunks)],
        log_dir,
    )  # fmt: skip
    process.start()
    try:
        process.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        yield System("direct", f"http://127.0.0.1:{port}", "none", process)
    finally:
        process.stop()


def set_chunk_delay(mock: System, delay_ms: float) -> None:
    httpx.post(f"{mock.base_url}/_control", json={"chunk_delay_ms": delay_ms}).raise_for_status()


@contextmanager
def redis_server(log_dir: Path) -> Iterator[str]:
    port = free_port()
    data = log_dir / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess("redis", server_command(port, data, with_search=False), log_dir)
    process.start()
    try:
        process.wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.stop()


@contextmanager
def gateway(log_dir: Path, mock: System, redis_url: str, spend: bool = False) -> Iterator[System]:
    """This gateway with keys, rate limits and the exact cache on; one worker. With
    `spend`: a price table and a key with a budget (and a team), so every request also
    reserves and settles its cost (`--spend`)."""
    port = free_port()
    env = {
        "PYTHONPATH": source_path("gateway"),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_MASTER_KEY": MASTER_KEY,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_UPSTREAMS": json.dumps(
            [{"name": "mock", "base_url": mock.base_url, "models": [MODEL]}]
        ),
        "GATEWAY_CACHE_ENABLED": "true",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }
    limits: dict[str, Any] = {"name": "bench", "rpm": 10**9, "tpm": 10**12}
    if spend:
        prices = {"input_per_million": 0.15, "output_per_million": 0.6}
        env["GATEWAY_MODEL_PRICES"] = json.dumps({MODEL: prices})
        limits |= {"budget": 10**6, "budget_window": "monthly", "team": "bench"}
    name = "gateway+spend" if spend else "gateway"
    process = ManagedProcess(
        name, [sys.executable, "-m", "gateway", "serve"], log_dir, env=env, cwd=log_dir
    )
    process.start()
    try:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{base_url}/healthz", timeout=60)
        # A client key with limits, so every request runs the rate-limit script.
        response = httpx.post(
            f"{base_url}/admin/keys",
            headers={"authorization": f"Bearer {MASTER_KEY}"},
            json=limits,
        )
        response.raise_for_status()
        yield System(name, base_url, response.json()["key"], process)
    finally:
        process.stop()


LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: none
general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
"""


@contextmanager
def litellm(log_dir: Path, mock: System, executable: Path) -> Iterator[System]:
    """LiteLLM's proxy, one worker, master key only (virtual keys need a database)."""
    port = free_port()
    config = log_dir / "litellm.yaml"
    config.write_text(
        LITELLM_CONFIG.format(model=MODEL, api_base=f"{mock.base_url}/v1", master_key=MASTER_KEY)
    )
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "true",
        "HOME": tempfile.mkdtemp(prefix="litellm-home-"),
    }
    argv = [str(executable), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]  # fmt: skip
    process = ManagedProcess("litellm", argv, log_dir, env={**os.environ, **env}, cwd=log_dir)
    process.start()
    try:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{base_url}/health/liveliness", timeout=180)
        yield System("litellm", base_url, MASTER_KEY, process)
    finally:
        process.stop()
