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
    """A copy of the model service's build context with its wheels folder filled by the
    README's command (the local torch wheel folder stands in for the PyTorch CPU index)."""
    context = tmp_path / "model"
    shutil.copytree(compose_project / "services" / "model", context)
    readme = (compose_project / "README.md").read_text()
    assert "pip download -d services/model/wheels" in readme
    build_requires = tomllib.loads((context / "pyproject.toml").read_text())["build-system"][
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
                str(context / "wheels"),
                "--find-links",
                str(torch_wheels),
                "torch==2.13.0+cpu",
                *build_requires,
                str(context),
            ],
            check=True,
            timeout=1200,
        )
    return context


@pytest.fixture
def offline_image(podman_ready: None, offline_context: Path, tmp_path: Path) -> Iterator[str]:
    pm.provide_images(pm.base_images(offline_context / "Dockerfile.cpu"))
    try:
        with timed("offline build: model CPU image, --network none"):
            pm.build_image(
                offline_context,
                offline_context / "Dockerfile.cpu",
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
        "import torch, transformers, model_service.app; "
        "print(torch.__version__, torch.cuda.is_available())",
    )
    assert probe.stdout.split() == ["2.13.0+cpu", "False"]
