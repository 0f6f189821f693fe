"""Run the stack with honcho: one process group per service, logs prefixed by name.

honcho starts every process at once, multiplexes their output and, on Ctrl-C (SIGINT)
or SIGTERM, sends SIGTERM to every process group, then SIGKILL after five seconds, so no
child outlives the stack. Dependency order comes from `devstack.after` gates in the
command lines; a watcher thread reports each service as its health endpoint goes green.
"""

from __future__ import annotations

import datetime
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Message

from devstack.health import wait_healthy
from devstack.services import Service, base_env, reachable_host

WATCHER = "devstack"


class _Manager(Manager):
    """honcho's Manager, telling us once every process is forked.

    The health watcher is a thread; starting it only after the forks keeps the
    children from inheriting a lock it might hold.
    """

    def __init__(self, on_started: Callable[[], None]) -> None:
        super().__init__()
        self._on_started = on_started

    def _start(self) -> None:
        super()._start()
        self._on_started()


def command_line(service: Service, services: list[Service], python: str) -> str:
    """The shell command honcho runs: the service, behind a gate on its dependencies."""
    urls = [s.health_url for s in services if s.name in service.after]
    argv = [python, "-m", "devstack.after", *urls, "--", *service.argv] if urls else service.argv
    return "exec " + shlex.join(argv)


class Stack:
    """The services under one honcho Manager, plus a watcher reporting their health."""

    def __init__(
        self,
        services: list[Service],
        root: Path,
        inherited: Mapping[str, str],
        start_timeout: float,
        python: str = sys.executable,
        redis_password: str = "",
    ) -> None:
        self.services = services
        self.root = root
        self.start_timeout = start_timeout
        self.redis_password = redis_password
        self.manager = _Manager(on_started=self._start_watcher)
        self._watcher = threading.Thread(target=self._watch, name="devstack-watch", daemon=True)
        self.failed = False
        self._stopping = threading.Event()
        env = base_env(root, inherited)
        env["DEV_START_TIMEOUT"] = str(start_timeout)
        if redis_password:
            env["REDISCLI_AUTH"] = redis_password  # for the devstack.after gates
        for service in services:
            self.manager.add_process(
                service.name,
                command_line(service, services, python),
                env={**env, **service.env},
                cwd=str(root),
            )
        # honcho sizes the name column from its own processes; make room for the watcher.
        self.manager._printer.width = max(self.manager._printer.width, len(WATCHER))

    def say(self, text: str) -> None:
        self.manager.events.put(
            Message(
                type="line",
                data=text + "\n",
                time=datetime.datetime.now(),
                name=WATCHER,
                colour=None,
            )
        )

    def _watch(self) -> None:
        started = time.monotonic()
        for service in self.services:
            healthy = wait_healthy(
                service.health_url,
                self.start_timeout,
                keep_going=lambda: not self._stopping.is_set(),
                redis_password=self.redis_password,
            )
            if self._stopping.is_set():
                return
            if not healthy:
                self.failed = True
                self.say(
                    f"{service.name} not healthy at {service.health_url} after "
                    f"{self.start_timeout:.0f}s: stopping the stack (see its log above)"
                )
                self.manager.terminate()
                return
            elapsed = time.monotonic() - started
            self.say(f"{service.name} healthy ({service.health_url}) after {elapsed:.1f}s")
        gateway = next((s for s in self.services if s.name == "gateway"), None)
        lines = ["stack ready:"] + [f"  {s.name:<9} {s.health_url}" for s in self.services]
        if gateway is not None:
            root = f"http://{reachable_host(gateway.host)}:{gateway.port}"
            lines.append(f"  OpenAI base URL: {root}/v1 (Ctrl-C stops everything)")
            lines.append(f"  Web console:     {root}/ui (sign in with GATEWAY_MASTER_KEY)")
        self.say("\n".join(lines))

    def _start_watcher(self) -> None:
        self._watcher.start()

    def run(self) -> int:
        try:
            self.manager.loop()
        finally:
            self._stopping.set()
            if self._watcher.is_alive():
                self._watcher.join(timeout=5)
        if self.failed:
            return 1
        return self.manager.returncode or 0
