""".env: written once with fresh secrets, then read the same way by every command
(`make dev`, `make eval`, `python -m gateway keys|rag`; compose in test_compose_file.py)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import urlparse

import pytest

from devstack import services as devstack_services
from devstack.envfile import write_env
from devstack.settings import load_settings
from evals.settings import EvalsSettings
from gateway.settings import Settings as GatewaySettings
from tests.support import project_files

# Variables a developer's shell might hold; each test reads only the file.
READ_VARIABLES = re.compile(r"^(GATEWAY_|EVALS_|REDIS_|DEV_|LLM_|EMBEDD)")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding this bake's .env.example and nothing else."""
    for name in list(os.environ):
        if READ_VARIABLES.match(name):
            monkeypatch.delenv(name)
    (tmp_path / ".env.example").write_text(project_files.text(".env.example"))
    monkeypatch.chdir(tmp_path)  # where every command runs: the project root
    return tmp_path


def test_env_is_written_with_fresh_private_secrets_and_never_overwritten(project: Path) -> None:
    written = write_env(project)
    assert written == project / ".env"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    first = load_settings(project)
    assert first.gateway_master_key.startswith("sk-") and len(first.gateway_master_key) > 40
    assert len(first.redis_password) >= 32
    assert write_env(project) is None  # kept: a second write would lock users out
    assert load_settings(project).gateway_master_key == first.gateway_master_key
    other = project / "other"
    other.mkdir()
    (other / ".env.example").write_text((project / ".env.example").read_text())
    write_env(other)
    assert load_settings(other).gateway_master_key != first.gateway_master_key
    assert load_settings(other).redis_password != first.redis_password


def test_every_command_reads_the_same_key_and_redis_from_env(project: Path) -> None:
    write_env(project)
    dev = load_settings(project)
    evals = EvalsSettings()  # `make eval`
    gateway = GatewaySettings()  # `python -m gateway serve|keys` on this machine

    assert evals.api_key is not None
    assert evals.api_key.get_secret_value() == dev.gateway_master_key == gateway.master_key
    assert urlparse(evals.base_url).port == dev.gateway_port
    # The gateway's CLI reaches the Redis the running stack uses, with its password.
    dev_gateway = devstack_services.gateway_env(dev)
    assert gateway.redis_url == dev_gateway["GATEWAY_REDIS_URL"]
    url = urlparse(gateway.redis_url)
    assert (url.password, url.port) == (dev.redis_password, dev.dev_redis_port)
    try:
        from gateway.rag.settings import RagSettings
    except ImportError:  # a bake without RAG
        return
    rag = RagSettings()  # type: ignore[call-arg]  # `python -m gateway rag ...`
    assert rag.redis_url == gateway.redis_url
    assert urlparse(rag.embeddings_base_url).port == dev.embedder_port


def test_a_changed_port_reaches_every_command(project: Path) -> None:
    write_env(project)
    env_file = project / ".env"
    text = env_file.read_text()
    text = re.sub(r"(?m)^GATEWAY_PORT=.*$", "GATEWAY_PORT=18080", text)
    env_file.write_text(re.sub(r"(?m)^DEV_REDIS_PORT=.*$", "DEV_REDIS_PORT=16380", text))
    assert urlparse(EvalsSettings().base_url).port == 18080
    assert urlparse(GatewaySettings().redis_url).port == 16380
    assert load_settings(project).dev_redis_port == 16380


def make_prerequisites() -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    for line in project_files.text("Makefile").splitlines():
        match = re.match(r"^([a-z.-]+):([^=#]*)", line)
        if match:
            targets[match[1]] = match[2].split()
    return targets


def test_make_targets_that_read_settings_create_a_missing_env_first() -> None:
    targets = make_prerequisites()
    for target in ("dev", "up", "eval"):
        assert ".env" in targets[target], target
    assert ".env" in targets and "env" in targets
