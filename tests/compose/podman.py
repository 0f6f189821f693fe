"""podman for the compose harness: configuration, base images and local stand-ins.

These machines have no Docker engine and reach no container registry. podman (runc,
cgroupfs, ulimits within the machine's own, see `containers.conf`) runs the containers;
the images the project's Dockerfiles and compose file start from are built locally by
`build_base_images.sh` and tagged with the exact names the project uses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
SETUP_SCRIPT = HERE / "setup_podman.sh"
BASE_IMAGES_SCRIPT = HERE / "build_base_images.sh"

DEBIAN_BASE = "localhost/debian:bookworm-slim"
PYTHON_STANDIN = "localhost/blueprint-standin/python:3.11"
REDIS_STANDIN = "localhost/blueprint-standin/redis-search:latest"

# Which stand-in serves an upstream image, by its repository name (the last path part).
STANDIN_BY_REPOSITORY = {
    "python": PYTHON_STANDIN,
    "debian": DEBIAN_BASE,
    "redis": REDIS_STANDIN,
    "redis-stack": REDIS_STANDIN,
    "redis-stack-server": REDIS_STANDIN,
    "valkey": REDIS_STANDIN,
    "valkey-bundle": REDIS_STANDIN,
}


class PodmanError(RuntimeError):
    pass


def podman_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every podman and podman-compose call runs with."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    env.update(extra or {})
    return env


def podman(
    *args: str, check: bool = True, timeout: float = 600, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args],
        env=dict(env) if env is not None else podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def unavailable_reason() -> str | None:
    """Why podman cannot be made to run on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"podman containers need Linux (this is {sys.platform})"
    if shutil.which("podman") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        return "podman is not installed and cannot be installed here (needs root and apt-get)"
    return None


def name_resolution_problem() -> str | None:
    """None when containers on one user network resolve each other by name, as compose
    services must; else what went wrong."""
    suffix = f"{os.getpid()}"
    network, probe = f"blueprint-dns-check-{suffix}", f"blueprint-dns-probe-{suffix}"
    try:
        podman("network", "create", network)
        podman(
            "run", "-d", "--rm", "--name", probe, "--network", network, DEBIAN_BASE, "sleep", "60"
        )
        lookup = podman(
            "run",
            "--rm",
            "--network",
            network,
            DEBIAN_BASE,
            "getent",
            "hosts",
            probe,
            check=False,
            timeout=60,
        )
        if lookup.returncode != 0:
            return (
                "a container cannot resolve another one by name on a podman network "
                f"(getent hosts {probe}: exit {lookup.returncode}); podman's CNI backend needs "
                "the dnsname plugin (Debian: golang-github-containernetworking-plugin-dnsname)"
            )
        return None
    finally:
        podman("rm", "--force", "--time", "0", probe, check=False)
        podman("network", "rm", "--force", network, check=False)


def run_script(script: Path, *args: str, timeout: float = 1800) -> str:
    """Run one of the harness's shell scripts; its log (stderr) is returned."""
    proc = subprocess.run(
        ["bash", str(script), *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise PodmanError(
            f"{script.name} exited {proc.returncode}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc.stderr


def qualified_name(ref: str) -> str:
    """An image reference as Docker resolves it: `redis:8.2` -> `docker.io/library/redis:8.2`."""
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}@{digest}" if digest else name


def repository(ref: str) -> str:
    """`docker.io/library/python:3.11-slim` -> `python`."""
    name = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S+))?", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
_COPY_FROM = re.compile(r"^\s*COPY\s+.*--from=(\S+)", re.IGNORECASE)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def declared_build_args(dockerfile: Path) -> set[str]:
    return {m.group(1) for line in dockerfile.read_text().splitlines() if (m := _ARG.match(line))}


def base_images(dockerfile: Path, build_args: Mapping[str, str] | None = None) -> list[str]:
    """Images a Dockerfile pulls: its FROM and COPY --from references that are not stages."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []

    def expand(text: str) -> str:
        def sub(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(3)
            return (build_args or {}).get(name) or values.get(name) or match.group(2) or ""

        return _VAR.sub(sub, text)

    for line in dockerfile.read_text().splitlines():
        if arg := _ARG.match(line):
            if arg.group(2) is not None:
                values.setdefault(arg.group(1), arg.group(2).strip("\"'"))
            continue
        ref = None
        if frm := _FROM.match(line):
            ref = expand(frm.group(1))
            if frm.group(2):
                stages.add(frm.group(2).lower())
        elif copy := _COPY_FROM.match(line):
            ref = expand(copy.group(1))
        if ref and ref.lower() not in stages and not ref.isdigit() and ref != "scratch":
            found.append(ref)
    return list(dict.fromkeys(found))


def provide_images(refs: Iterable[str]) -> dict[str, str]:
    """Tag a local stand-in with each reference that is not in local storage yet.

    A real image already under that name is left alone (stand-ins carry the label
    `blueprint.standin`, so an older stand-in tag is moved to the current one). Returns
    {reference: stand-in used}. Raises when a missing reference has no stand-in.
    """
    used: dict[str, str] = {}
    missing: list[str] = []
    for ref in dict.fromkeys(refs):
        name = qualified_name(ref)
        present = podman("image", "exists", name, check=False).returncode == 0
        if present and not _is_standin(name):
            continue
        standin = STANDIN_BY_REPOSITORY.get(repository(ref))
        if standin is not None:
            podman("tag", standin, name)
            used[ref] = standin
        elif not present:
            missing.append(ref)
    if missing:
        raise PodmanError(
            f"no registry is reachable and there is no local stand-in for {', '.join(missing)}; "
            "add one under tests/compose/images and to STANDIN_BY_REPOSITORY"
        )
    return used


def wheel_index(wheels: Path, dest: Path, mounted_at: str) -> Path:
    """A PEP 503 "simple" index (file pages) of a wheel folder mounted at `mounted_at`.

    pip accepts `file://` index URLs; this lets a Dockerfile's `--extra-index-url`
    build argument reach local wheels without changing the Dockerfile.
    """
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()
        projects.setdefault(name, []).append(wheel.name)
    for name, files in projects.items():
        page = dest / name
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="file://{mounted_at}/{f}">{f}</a><br>\n' for f in files)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return dest


def _is_standin(name: str) -> bool:
    labels = podman("image", "inspect", "--format", "{{json .Labels}}", name).stdout
    return '"blueprint.standin"' in labels


def build_image(
    context: Path,
    dockerfile: Path,
    tag: str,
    build_args: Mapping[str, str],
    volumes: Sequence[str],
    log: Path,
    target: str | None = None,
    timeout: float = 1800,
    network: str | None = None,
) -> None:
    """`podman build` with build-time-only settings (mounted files, build arguments).

    `network="none"` gives the `RUN` steps no network at all (an air-gapped build)."""
    # docker format keeps the Dockerfile's HEALTHCHECK (OCI images drop it)
    argv = ["build", "--pull=never", "--layers", "--format=docker", "--tag", tag]
    if network:
        argv += ["--network", network]
    argv += ["--file", str(dockerfile)]
    if target:
        argv += ["--target", target]
    for volume in volumes:
        argv += ["--volume", volume]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    argv.append(str(context))
    previous = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    with log.open("a") as out:
        out.write(f"$ podman {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(
            ["podman", *argv],
            env=podman_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    if proc.returncode != 0:
        tail = log.read_text()[-6000:]
        raise PodmanError(f"building {tag} from {dockerfile} failed:\n{tail}")
    current = podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if previous and previous != current:
        # the image this tag pointed at before is now unnamed: do not let rebuilds pile up
        podman("rmi", previous, check=False)
