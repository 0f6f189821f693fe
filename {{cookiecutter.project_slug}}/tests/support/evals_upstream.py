"""Fixtures for the evals tests: scripted upstream servers (real HTTP processes).

Importing the `evals` package here, from a plugin that the root conftest loads first,
matters: pytest's importlib mode names `evals/tests/test_*.py` as `evals.tests.*` and
would otherwise register the folder `evals/` as a namespace package called `evals`,
hiding the real package (`evals/evals/`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import evals  # noqa: F401  (see the module docstring)
from tests.support.processes import ManagedProcess, free_port

SCRIPTED_UPSTREAM = Path(__file__).resolve().parents[2] / "evals" / "tests" / "scripted_upstream.py"


class ScriptedUpstream:
    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def configure(self, script: dict[str, Any]) -> None:
        httpx.post(f"{self.base_url}/script", json=script, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.base_url}/stats", timeout=5).json()
        return data


class _Pool:
    """Scripted upstream processes started once per session and reconfigured per test."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[ScriptedUpstream] = []

    def get(self, index: int) -> ScriptedUpstream:
        while len(self.servers) <= index:
            port = free_port()
            process = ManagedProcess(
                f"scripted-upstream-{port}",
                [sys.executable, str(SCRIPTED_UPSTREAM), "--port", str(port)],
                log_dir=self.log_dir,
            ).start()
            try:
                process.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=30)
            except Exception:
                process.stop()
                raise
            self.servers.append(ScriptedUpstream(process, port))
        return self.servers[index]

    def stop(self) -> None:
        for server in self.servers:
            server.process.stop()


@pytest.fixture(scope="session")
def _scripted_upstream_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Pool]:
    pool = _Pool(tmp_path_factory.mktemp("scripted-upstreams"))
    yield pool
    pool.stop()


@pytest.fixture
def scripted_upstream(_scripted_upstream_pool: _Pool) -> Callable[..., ScriptedUpstream]:
    """Factory: `scripted_upstream(ttft=0.3, gaps=[0.1, 0.2])` gives a server running that
    script (the n-th call in a test gets the n-th server, so a test can have several)."""
    handed_out = 0

    def configure(**script: Any) -> ScriptedUpstream:
        nonlocal handed_out
        server = _scripted_upstream_pool.get(handed_out)
        handed_out += 1
        server.configure(json.loads(json.dumps(script)))
        return server

    return configure
