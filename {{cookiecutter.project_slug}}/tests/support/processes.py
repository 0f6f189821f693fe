"""Start real server processes for tests and wait until they answer.

Used by the session fixtures (Redis, model services, gateway). Each process runs in
its own process group with its output in a log file, so a failed start shows the log
and teardown can never leave children behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def source_path(*folders: str) -> str:
    """PYTHONPATH for a service run from this checkout, as `make dev` sets it: its own
    folders, the shared package every service imports (`common/`), the project root
    (for `tests`), then whatever PYTHONPATH the tests themselves run with."""
    parts = [str(PROJECT_ROOT / folder) for folder in (*folders, "common")]
    parts += [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(part for part in parts if part)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """A child process with a log file, a readiness probe and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited ({self.proc and self.proc.returncode}) before {what}.\n"
                    f"--- {self.log_path} ---\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise TimeoutError(
            f"{self.name} not {what} after {timeout:.0f}s.\n"
            f"--- {self.log_path} ---\n{self.log_tail()}"
        )

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        def ok() -> bool:
            return httpx.get(url, timeout=2.0).status_code == 200

        self.wait_until(ok, timeout, f"healthy at {url}")

    def wait_port(self, port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        def ok() -> bool:
            with socket.create_connection((host, port), timeout=1.0):
                return True

        self.wait_until(ok, timeout, f"listening on {host}:{port}")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Reap anything the process group left behind (e.g. vLLM's engine core).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Hard stop, as a crash would look to clients."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running(process: ManagedProcess) -> Iterator[ManagedProcess]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
