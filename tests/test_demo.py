"""`make demo` is the template's main job: it must run end to end and leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from tests.matrix import ROOT

pytestmark = pytest.mark.slow


DEMO_DIR = str(ROOT / "build" / "demo")


def _demo_processes() -> set[int]:
    """Processes started from the demo's bake (their command line names it)."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if DEMO_DIR in cmdline or cwd.startswith(DEMO_DIR):
            found.add(proc.info["pid"])
    return found


def test_make_demo() -> None:
    before = _demo_processes()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "x-cache: hit" in output.lower(), output[-4000:]
    assert "report" in output.lower() and "reports/" in output, output[-4000:]
    leftovers = _demo_processes() - before
    assert leftovers == set(), f"processes left running: {leftovers}"
