"""Fixtures of the compose harness: podman, base images, the baked stack, running.

`compose_stack` (module scope) bakes the template with its defaults, builds the
project's own images from its Dockerfiles, `podman-compose up`s the default CPU profile
with the prepared models mounted, waits on the health endpoints and tears everything
down at the end, also when a step fails. Durations go to the terminal summary and to
`compose-timings.json` in the run's log folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from dotenv import dotenv_values
from openai import OpenAI

from tests.compose import podman as pm
from tests.compose.stack import ComposeError, ComposeStack, published
from tests.conftest import Bakery
from tests.matrix import ROOT

# The default bake runs the `cpu` profile; `evals` holds the one-shot evals job.
UP_PROFILES = ("cpu",)
ALL_PROFILES = ("cpu", "evals")
MODEL_FOLDERS = ("HuggingFaceTB--SmolLM2-135M-Instruct", "sentence-transformers--all-MiniLM-L6-v2")
PORT_VARIABLES = ("GATEWAY_PORT", "LLM_PORT", "EMBEDDER_PORT", "DEV_REDIS_PORT")
# Building, starting and loading models on 2 shared cores takes a while.
MODEL_LOAD_TIMEOUT = float(os.environ.get("COMPOSE_MODEL_LOAD_TIMEOUT", "600"))

TIMINGS: dict[str, float] = {}
TIMINGS_FILE: list[Path] = []


@contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS[label] = round(time.monotonic() - start, 1)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("compose harness timings (s)")
    for label, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{label:<48} {seconds:>8.1f}")
    for path in TIMINGS_FILE:
        path.write_text(json.dumps(TIMINGS, indent=2) + "\n")
        terminalreporter.write_line(f"written to {path}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


# --- podman and base images -------------------------------------------------------------


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """podman installed and configured, base images and stand-ins built (cached)."""
    reason = pm.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with timed("setup: podman and podman-compose"):
        try:
            pm.run_script(pm.SETUP_SCRIPT, sys.executable)
        except pm.PodmanError as exc:
            pytest.skip(f"podman cannot run on this machine: {exc}")
    with timed("setup: base images and stand-ins"):
        pm.run_script(pm.BASE_IMAGES_SCRIPT)
    with timed("setup: container smoke run"):
        proc = pm.podman("run", "--rm", pm.DEBIAN_BASE, "true", check=False, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"podman cannot start containers on this machine: {proc.stderr[-2000:]}")
    with timed("setup: name resolution between containers"):
        problem = pm.name_resolution_problem()
    if problem is not None:
        pytest.fail(problem)  # a setup fault, not a platform limit: never a skip


# --- the baked project ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_project(request: pytest.FixtureRequest) -> Path:
    """The default bake, or COMPOSE_PROJECT_DIR: a baked project to run as it is (for
    iterating on a bake's Dockerfiles or compose file without re-baking)."""
    given = os.environ.get("COMPOSE_PROJECT_DIR")
    if given:
        project = Path(given).resolve()
    else:
        bakery: Bakery = request.getfixturevalue("bakery")
        with timed("bake (defaults)"):
            project = bakery.bake({})
    # The post-gen hook wrote .env (random master key and Redis password); a project given
    # by COMPOSE_PROJECT_DIR without one gets it the way `make env` writes it.
    if not (project / ".env").exists():
        subprocess.run(
            [sys.executable, "-m", "devstack", "env"], cwd=project, check=True, env=_project_env()
        )
    return project


def _project_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": "."}


@pytest.fixture(scope="module")
def dotenv(compose_project: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(compose_project / ".env").items()}


def models_dir() -> Path:
    folder = Path(os.environ.get("MODELS_DIR", ROOT / ".cache" / "models")).resolve()
    missing = [name for name in MODEL_FOLDERS if not (folder / name / "config.json").exists()]
    if missing:
        pytest.fail(
            f"prepared models missing in {folder}: {', '.join(missing)} (run `make models`)"
        )
    return folder


def build_settings(workdir: Path) -> tuple[dict[str, str], list[str]]:
    """Build arguments and mounts for an air-gapped build on this machine.

    Only build-time settings differ from a user's `docker compose build`: the machine's
    CA bundle is mounted (pip reaches the package index only through it), and the local
    CPU torch wheel is offered through the build arguments the Dockerfiles declare for
    it: `TORCH_INDEX_URL` (the model image's "index serving the CPU build of torch")
    points at a one-page index of the wheel folder, `PIP_FIND_LINKS` at the folder.
    """
    volumes: list[str] = []
    ca_bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    if ca_bundle.is_file():
        volumes.append(f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro")
    build_args: dict[str, str] = {}
    wheels = Path(os.environ.get("BLUEPRINT_WHEELS_DIR", "/opt/wheels"))
    if any(wheels.glob("torch-*.whl")):
        index = pm.wheel_index(wheels, workdir / "wheel-index", mounted_at="/opt/wheels")
        volumes += [f"{wheels}:/opt/wheels:ro", f"{index}:/opt/wheel-index:ro"]
        build_args["TORCH_INDEX_URL"] = "file:///opt/wheel-index"
        build_args["PIP_FIND_LINKS"] = "/opt/wheels"
    return build_args, volumes


@dataclass(frozen=True)
class ImageBuild:
    """What compose would build for one image, as its resolved config says."""

    service: str
    image: str
    context: Path
    dockerfile: Path
    args: dict[str, str]
    target: str | None


def images_to_build(config: dict[str, Any], project: Path) -> list[ImageBuild]:
    """One entry per image compose would build (llm and embedder share one image)."""
    found: dict[str, ImageBuild] = {}
    for name, service in config.get("services", {}).items():
        build = service.get("build")
        if not build:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (project / build.get("context", ".")).resolve()
        raw_args = build.get("args") or {}
        if isinstance(raw_args, list):
            raw_args = dict(item.split("=", 1) for item in raw_args)
        image = service.get("image") or f"{name}:latest"
        found.setdefault(
            image,
            ImageBuild(
                service=name,
                image=image,
                context=context,
                dockerfile=(context / build.get("dockerfile", "Dockerfile")).resolve(),
                args={str(k): "" if v is None else str(v) for k, v in raw_args.items()},
                target=build.get("target"),
            ),
        )
    return list(found.values())


def prepare_images(stack: ComposeStack, project: Path, workdir: Path) -> None:
    """Stand-ins for every base/registry image, then the project's own images.

    Each image gets the build arguments compose would pass (`build.args`) plus the
    air-gapped build settings its Dockerfile declares.
    """
    config = stack.config(profiles=ALL_PROFILES)
    builds = images_to_build(config, project)
    air_gap_args, volumes = build_settings(workdir)
    refs: list[str] = []
    plans: list[tuple[ImageBuild, dict[str, str]]] = []
    for build in builds:
        declared = pm.declared_build_args(build.dockerfile)
        args = {**build.args, **{k: v for k, v in air_gap_args.items() if k in declared}}
        plans.append((build, args))
        refs += pm.base_images(build.dockerfile, args)
    for service in config.get("services", {}).values():
        if not service.get("build") and service.get("image"):
            refs.append(service["image"])
    pm.provide_images(refs)
    for build, args in plans:
        with timed(f"build: {build.image}"):
            pm.build_image(
                build.context,
                build.dockerfile,
                build.image,
                args,
                volumes,
                stack.log_dir / f"build-{build.service}.log",
                target=build.target,
            )


# --- the running stack ------------------------------------------------------------------


def gateway_ready(env: dict[str, str]) -> dict[str, Any] | None:
    response = httpx.get(published(env, "GATEWAY_PORT") + "/readyz", timeout=5)
    body = response.json()
    upstreams = body.get("upstreams", {})
    ready = response.status_code == 200 and body.get("status") == "ok"
    if ready and upstreams and all(state == "up" for state in upstreams.values()):
        return dict(body)
    return None


def model_ready(env: dict[str, str], variable: str) -> bool | None:
    response = httpx.get(published(env, variable) + "/health", timeout=5)
    return True if response.status_code == 200 else None


def redis_ready(env: dict[str, str]) -> bool | None:
    client = redis.Redis(
        port=int(env["DEV_REDIS_PORT"]), password=env["REDIS_PASSWORD"], socket_timeout=2
    )
    try:
        return True if client.ping() else None
    finally:
        client.close()


def wait_healthy(stack: ComposeStack, timeout: float = MODEL_LOAD_TIMEOUT) -> None:
    """Health endpoints from the test: podman here runs no compose healthchecks."""
    env = stack.env
    stack.wait_until("redis answers PING", lambda: redis_ready(env), 60, ["redis"])
    stack.wait_until("llm /health", lambda: model_ready(env, "LLM_PORT"), timeout, ["llm"])
    stack.wait_until(
        "embedder /health", lambda: model_ready(env, "EMBEDDER_PORT"), timeout, ["embedder"]
    )
    stack.wait_until("gateway /readyz ok", lambda: gateway_ready(env), 120, ["gateway"])


@pytest.fixture(scope="module")
def compose_stack(
    podman_ready: None,
    compose_project: Path,
    dotenv: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[ComposeStack]:
    log_dir = Path(os.environ.get("COMPOSE_LOG_DIR", tmp_path_factory.mktemp("compose-logs")))
    log_dir.mkdir(parents=True, exist_ok=True)
    TIMINGS_FILE.append(log_dir / "compose-timings.json")
    reports = tmp_path_factory.mktemp("reports")
    reports.chmod(0o777)  # the evals image may run as an unprivileged user
    slug = re.sub(r"[^a-z0-9]+", "-", compose_project.name.lower())
    env = {
        "COMPOSE_PROFILES": ",".join(UP_PROFILES),
        "MODELS_DIR": str(models_dir()),
        "REPORTS_DIR": str(reports),
        # Cached between runs under a name of their own, so a user's images stay apart.
        "IMAGE_PREFIX": f"localhost/blueprint-compose/{slug}",
        "IMAGE_TAG": "test",
        **{variable: str(free_port()) for variable in PORT_VARIABLES},
        # Compose's Redis requires it; the test's own Redis client needs it too.
        "REDIS_PASSWORD": dotenv["REDIS_PASSWORD"],
    }
    stack = ComposeStack(
        project_dir=compose_project,
        name=f"blueprint-compose-{os.getpid()}",
        env=env,
        log_dir=log_dir,
        profiles=UP_PROFILES,
    )

    def teardown() -> None:
        with timed("teardown (down, sweep)"):
            left = stack.down(all_profiles=ALL_PROFILES)
        if left:
            raise ComposeError(f"left behind after teardown: {', '.join(left)}")

    request.addfinalizer(teardown)
    with timed("images: stand-ins and project builds"):
        prepare_images(stack, compose_project, tmp_path_factory.mktemp("build"))
    with timed("podman-compose up -d"):
        stack.compose("up", "-d")
    with timed("stack healthy (models loaded)"):
        wait_healthy(stack)
    stack.env["GATEWAY_MASTER_KEY"] = dotenv["GATEWAY_MASTER_KEY"]
    yield stack


@pytest.fixture
def stack(compose_stack: ComposeStack) -> ComposeStack:
    """The running stack; a service a failed test left stopped is started again first."""
    stopped = [
        s for s in ("redis", "llm", "embedder", "gateway") if compose_stack.state(s) != "running"
    ]
    for service in stopped:
        compose_stack.start(service)
    if stopped:
        wait_healthy(compose_stack)
    return compose_stack


@pytest.fixture
def gateway_url(stack: ComposeStack) -> str:
    return published(stack.env, "GATEWAY_PORT")


@pytest.fixture
def master_key(stack: ComposeStack) -> str:
    return stack.env["GATEWAY_MASTER_KEY"]


@pytest.fixture
def client(gateway_url: str, master_key: str) -> OpenAI:
    """The openai SDK against the gateway; no SDK retries, so each status is seen as sent."""
    return OpenAI(base_url=gateway_url + "/v1", api_key=master_key, max_retries=0, timeout=180)


@pytest.fixture
def llm_model(dotenv: dict[str, str]) -> str:
    return dotenv["LLM_MODEL"]


@pytest.fixture
def embedding_model(dotenv: dict[str, str]) -> str:
    return dotenv["EMBEDDING_MODEL"]
