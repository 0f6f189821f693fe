"""Shared fixtures for the template tests: bake once per answer set, run tools in bakes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.matrix import ROOT, answers, bake_id, unique_bakes
from tools.template_snapshot import snapshot_template

BAKE_SUMMARY: dict[str, dict[str, Any]] = {}


def pytest_configure(config: pytest.Config) -> None:
    # pytest-cookies bakes from --template (default "."): point it at a clean snapshot.
    if getattr(config.option, "template", ".") in (".", str(ROOT)) and (ROOT / ".git").exists():
        snapshot = Path(tempfile.mkdtemp(prefix="template-snapshot-"))
        config.option.template = str(snapshot_template(snapshot))
        config.add_cleanup(lambda: shutil.rmtree(snapshot, ignore_errors=True))


class Bakery:
    """Bakes the template with pytest-cookies, once per distinct answer set."""

    def __init__(self, cookies: Any) -> None:
        self._cookies = cookies
        self._done: dict[str, Path] = {}

    def bake(self, overrides: dict[str, Any]) -> Path:
        key = bake_id(overrides)
        if key not in self._done:
            result = self._cookies.bake(extra_context=dict(overrides))
            if result.exception is not None:
                raise AssertionError(f"bake {key} failed: {result.exception!r}")
            assert result.exit_code == 0, f"bake {key} exited {result.exit_code}"
            self._done[key] = Path(result.project_path)
            BAKE_SUMMARY[key] = answers(overrides)
        return self._done[key]


@pytest.fixture(scope="session")
def bakery(cookies_session: Any) -> Bakery:
    return Bakery(cookies_session)


def run(
    argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run a command in a bake; on failure the assertion shows its output."""
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode} in {cwd}\n"
        f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
    )
    return proc


def baked_test_env() -> dict[str, str]:
    """Environment for a baked project's own test suite: shared models and vLLM venv."""
    env = {
        "MODELS_DIR": os.environ.get("MODELS_DIR", str(ROOT / ".cache" / "models")),
        "MODEL_VLLM_PYTHON": os.environ.get(
            "MODEL_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python")
        ),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return env


def python_tool(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Bakes happen in whichever process ran the test (also under xdist), so the
    # summary lists every answer set that was baked there or, in the controller,
    # the matrix the bake tests ran over.
    baked = dict(BAKE_SUMMARY)
    if not baked and any(
        "test_bakes.py" in report.nodeid
        for reports in terminalreporter.stats.values()
        for report in reports
        if hasattr(report, "nodeid")
    ):
        baked = {bake_id(overrides): answers(overrides) for overrides in unique_bakes()}
    if not baked:
        return
    terminalreporter.section(f"bakes: {len(baked)}")
    for key, full in baked.items():
        options = " ".join(f"{k}={v}" for k, v in full.items())
        terminalreporter.write_line(f"{key:<60} {options}")
