"""The CPU model image builds air-gapped, as the generated README says.

`MODEL_WHEELS_ONLY=1` (build argument `WHEELS_ONLY`) installs only from wheels put in
`services/model/wheels/` beforehand with the README's `pip download` command. The build
here runs with no network at all (`podman build --network none`), so a dependency or
build requirement missing from that command fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose import podman as pm
from tests.compose.conftest import timed

pytestmark = pytest.mark.compose

TAG = f"localhost/blueprint-compose/offline-model-cpu:{os.getpid()}"


@pytest.fixture
def offline_context(compose_project: Path, tmp_path: Path) -> Path:
    """A copy of the model image's build context (the project root: the model service and
    the shared package) with the wheels folder filled by the README's command (the local
    torch wheel folder stands in for the PyTorch CPU index)."""
    context = tmp_path / "project"
    for part in ("services/model", "common"):
        shutil.copytree(compose_project / part, context / part)
    shutil.copy(compose_project / ".dockerignore", context)
    model = context / "services" / "model"
    readme = (compose_project / "README.md").read_text()
    assert "pip download -d services/model/wheels" in readme and "./common`" in readme
    build_requires = tomllib.loads((model / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    torch_wheels = Path(os.environ.get("BLUEPRINT_WHEELS_DIR", "/opt/wheels"))
    if not any(torch_wheels.glob("torch-2.13.0+cpu-*.whl")):
        pytest.fail(f"no torch 2.13.0+cpu wheel in {torch_wheels} (set BLUEPRINT_WHEELS_DIR)")
    with timed("offline build: pip download of the wheels"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--dest",
                str(model / "wheels"),
                "--find-links",
                str(torch_wheels),
                "torch==2.13.0+cpu",
                *build_requires,
                str(model),
                str(context / "common"),
            ],
            check=True,
            timeout=1200,
        )
    return context


@pytest.fixture
def offline_image(podman_ready: None, offline_context: Path, tmp_path: Path) -> Iterator[str]:
    dockerfile = offline_context / "services" / "model" / "Dockerfile.cpu"
    pm.provide_images(pm.base_images(dockerfile))
    try:
        with timed("offline build: model CPU image, --network none"):
            pm.build_image(
                offline_context,
                dockerfile,
                TAG,
                {"WHEELS_ONLY": "1"},
                volumes=[],
                log=Path(os.environ.get("COMPOSE_LOG_DIR", tmp_path)) / "build-offline-model.log",
                network="none",
            )
        yield TAG
    finally:
        pm.podman("rmi", "--force", TAG, check=False)


def test_cpu_model_image_builds_without_network(offline_image: str) -> None:
    probe = pm.podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python",
        offline_image,
        "-P",
        "-c",
        "import torch, transformers, model_service.app, service_common.tracing; "
        "print(torch.__version__, torch.cuda.is_available())",
    )
    assert probe.stdout.split() == ["2.13.0+cpu", "False"]
