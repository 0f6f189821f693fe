"""One compose project run with podman-compose, and the container operations tests need.

Containers, networks and volumes carry podman-compose's project label, so teardown can
sweep everything the project made even when `down` itself fails half-way.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.compose.podman import PodmanError, podman, podman_env

PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "com.docker.compose.service"

T = TypeVar("T")


class ComposeError(RuntimeError):
    pass


@dataclass
class ComposeStack:
    """`podman-compose -p NAME` in a baked project directory, with a fixed environment."""

    project_dir: Path
    name: str
    env: dict[str, str]
    log_dir: Path
    profiles: Sequence[str] = ("cpu",)
    timings: dict[str, float] = field(default_factory=dict)

    def compose(
        self,
        *args: str,
        profiles: Sequence[str] | None = None,
        check: bool = True,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podman_compose", "-p", self.name]
        for profile in self.profiles if profiles is None else profiles:
            argv += ["--profile", profile]
        argv += list(args)
        proc = subprocess.run(
            argv,
            cwd=self.project_dir,
            env=podman_env(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        with (self.log_dir / "podman-compose.log").open("a") as log:
            log.write(f"$ {' '.join(argv[1:])}  (exit {proc.returncode})\n")
            log.write(proc.stdout + proc.stderr + "\n")
        if check and proc.returncode != 0:
            raise ComposeError(
                f"podman-compose {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
            )
        return proc

    def config(self, profiles: Sequence[str] | None = None) -> dict[str, Any]:
        """The compose file as podman-compose resolves it (variables, active profiles)."""
        loaded = yaml.safe_load(self.compose("config", profiles=profiles).stdout)
        if not isinstance(loaded, dict):
            raise ComposeError("podman-compose config printed no mapping")
        return loaded

    # --- containers -------------------------------------------------------------------

    def container(self, service: str) -> str:
        """Name of the service's container (running or not)."""
        names = self._listed(
            "ps",
            "-a",
            "--filter",
            f"label={PROJECT_LABEL}={self.name}",
            "--filter",
            f"label={SERVICE_LABEL}={service}",
            "--format",
            "{{.Names}}",
        )
        if not names:
            raise ComposeError(f"service {service!r} has no container in project {self.name}")
        return names[0]

    def state(self, service: str) -> str:
        return podman(
            "inspect", "--format", "{{.State.Status}}", self.container(service)
        ).stdout.strip()

    def stop(self, service: str, grace_seconds: int = 10) -> None:
        podman("stop", "--time", str(grace_seconds), self.container(service))

    def kill(self, service: str) -> None:
        podman("kill", self.container(service))

    def start(self, service: str) -> None:
        podman("start", self.container(service))

    def restart(self, service: str, grace_seconds: int = 10) -> None:
        podman("restart", "--time", str(grace_seconds), self.container(service))

    def healthcheck(self, service: str) -> subprocess.CompletedProcess[str]:
        """Run the service's compose healthcheck once (podman has no timers here)."""
        return podman("healthcheck", "run", self.container(service), check=False, timeout=60)

    def logs(self, service: str, tail: int = 80) -> str:
        try:
            proc = podman("logs", "--tail", str(tail), self.container(service), check=False)
        except (ComposeError, PodmanError) as exc:
            return str(exc)
        return proc.stdout + proc.stderr

    def save_logs(self) -> None:
        for name in self._listed(
            "ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.name}", "--format", "{{.Names}}"
        ):
            proc = podman("logs", name, check=False)
            (self.log_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)

    def wait_until(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float,
        services: Sequence[str] = (),
        interval: float = 1.0,
    ) -> T:
        """Poll `probe` until it returns a value; fail early when a service exited."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                result = probe()
            except Exception as exc:  # the probe's own failures mean "not yet"
                last_error = exc
                result = None
            if result is not None:
                return result
            for service in services:
                if self.state(service) in ("exited", "stopped", "dead"):
                    raise ComposeError(
                        f"{what}: {service} exited while waiting\n{self.logs(service)}"
                    )
            time.sleep(interval)
        logs = "\n".join(f"--- {s} ---\n{self.logs(s)}" for s in services)
        raise ComposeError(f"{what}: not within {timeout:.0f} s (last: {last_error!r})\n{logs}")

    # --- teardown -----------------------------------------------------------------------

    def down(self, all_profiles: Sequence[str] = ()) -> list[str]:
        """Remove everything the project made; returns what was still left afterwards."""
        with contextlib.suppress(PodmanError, OSError, subprocess.SubprocessError):
            self.save_logs()
        profiles = list(dict.fromkeys([*self.profiles, *all_profiles]))
        with contextlib.suppress(subprocess.SubprocessError):
            self.compose("down", "--volumes", "--timeout", "5", profiles=profiles, check=False)
        label = f"label={PROJECT_LABEL}={self.name}"
        sweeps = [
            (("ps", "-a", "-q"), ("rm", "--force", "--volumes")),
            (("pod", "ps", "-q"), ("pod", "rm", "--force")),
            (("volume", "ls", "-q"), ("volume", "rm", "--force")),
            (("network", "ls", "-q"), ("network", "rm", "--force")),
        ]
        for listing, removal in sweeps:
            found = self._listed(*listing, "--filter", label)
            if found:
                podman(*removal, *found, check=False)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        label = f"label={PROJECT_LABEL}={self.name}"
        left = [f"container {c}" for c in self._listed("ps", "-a", "-q", "--filter", label)]
        left += [f"volume {v}" for v in self._listed("volume", "ls", "-q", "--filter", label)]
        left += [f"network {n}" for n in self._listed("network", "ls", "-q", "--filter", label)]
        return left

    def _listed(self, *args: str) -> list[str]:
        return podman(*args).stdout.split()


def published(env: Mapping[str, str], variable: str) -> str:
    """http://127.0.0.1:PORT for a port variable of the stack's environment."""
    return f"http://127.0.0.1:{env[variable]}"
