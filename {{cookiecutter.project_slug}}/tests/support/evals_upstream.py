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

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.base_url}/stats", timeout=5).json()
        return data


@pytest.fixture
def scripted_upstream(tmp_path: Path) -> Iterator[Callable[..., ScriptedUpstream]]:
    """Factory: `scripted_upstream(ttft=0.3, gaps=[0.1, 0.2])` starts a server process."""
    started: list[ManagedProcess] = []

    def start(**script: Any) -> ScriptedUpstream:
        port = free_port()
        process = ManagedProcess(
            f"scripted-upstream-{port}",
            [
                sys.executable,
                str(SCRIPTED_UPSTREAM),
                "--port",
                str(port),
                "--script",
                json.dumps(script),
            ],
            log_dir=tmp_path,
        ).start()
        started.append(process)
        process.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=30)
        return ScriptedUpstream(process, port)

    yield start
    for process in started:
        process.stop()
