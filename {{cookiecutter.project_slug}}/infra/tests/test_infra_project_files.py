"""The shipped Pulumi project files: they render, their config validates, and the example
stacks deploy under mocks into schema-valid, policy-compliant objects."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from pulumi.runtime import config as runtime_config

from blueprint_infra.config import load_stack_config
from blueprint_infra.program import run
from blueprint_infra.testing import (
    AWS_CALLS,
    AWS_OUTPUTS,
    PROJECT,
    policy_violations,
    run_program,
    schema_errors,
    stack_config,
)

INFRA = Path(__file__).resolve().parent.parent
TEMPLATE_CONTEXT = INFRA.parent.parent / "cookiecutter.json"
SECRETS = {"masterKey": "sk-test-master-key-0123456789", "redisPassword": "redis-pass-0123456789"}
AWS_MODULE = INFRA / "blueprint_infra" / "aws"


def is_template() -> bool:
    return "cookiecutter.project_slug" in (INFRA / "Pulumi.yaml").read_text()


def deploy_targets() -> list[str]:
    if is_template():
        return ["kubernetes", "aws-eks"]
    return ["aws-eks" if AWS_MODULE.exists() else "kubernetes"]


def render(name: str, deploy_target: str) -> str:
    text = (INFRA / name).read_text()
    if not is_template():
        return text
    defaults = json.loads(TEMPLATE_CONTEXT.read_text())
    context = {
        key: value[0] if isinstance(value, list) else value
        for key, value in defaults.items()
        if not key.startswith("_")
    }
    context.update(project_slug=PROJECT, deploy_target=deploy_target)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(text).render(cookiecutter=context)


def project_name(deploy_target: str) -> str:
    return yaml.safe_load(render("Pulumi.yaml", deploy_target))["name"]


def stack_values(name: str, deploy_target: str) -> dict[str, Any]:
    """The stack file's config for our project, as the program reads it, plus test secrets."""
    config = yaml.safe_load(render(name, deploy_target))["config"]
    prefix = f"{project_name(deploy_target)}:"
    ours = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return {**ours, **SECRETS}


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    yield
    runtime_config.set_all_config({}, [])


@pytest.mark.parametrize("deploy_target", deploy_targets())
def test_pulumi_project_runs_python_from_a_virtualenv(deploy_target: str) -> None:
    project = yaml.safe_load(render("Pulumi.yaml", deploy_target))
    assert project["name"] == PROJECT
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": "venv"},
    }
    policy = yaml.safe_load((INFRA / "policy" / "PulumiPolicy.yaml").read_text())
    assert policy["runtime"]["name"] == "python"


@pytest.mark.parametrize("deploy_target", deploy_targets())
@pytest.mark.parametrize("stack", ["Pulumi.dev.yaml", "Pulumi.prod.yaml"])
def test_example_stacks_validate(deploy_target: str, stack: str) -> None:
    values = stack_values(stack, deploy_target)
    runtime_config.set_all_config(stack_config(values), [f"{PROJECT}:{k}" for k in SECRETS])
    config, _ = load_stack_config(PROJECT)
    if stack == "Pulumi.prod.yaml":
        assert config.llm.accelerator == "gpu"
        assert config.platform == deploy_target
    else:
        assert (config.platform, config.llm.accelerator) == ("kubernetes", "cpu")


EXAMPLE_DEPLOYS = [("Pulumi.dev.yaml", deploy_targets()[0])] + [
    ("Pulumi.prod.yaml", target) for target in deploy_targets()
]


@pytest.mark.parametrize(("stack", "deploy_target"), EXAMPLE_DEPLOYS)
def test_example_stacks_deploy_valid_compliant_objects(stack: str, deploy_target: str) -> None:
    captured = run_program(
        run,
        stack_values(stack, deploy_target),
        secret_keys=tuple(SECRETS),
        outputs=AWS_OUTPUTS,
        calls=AWS_CALLS,
    )
    assert len(list(captured.kubernetes_objects())) > 20
    assert schema_errors(captured, versions=("1.33",)) == []
    assert policy_violations(captured) == []


def test_requirements_match_the_pyproject_pins() -> None:
    pyproject = tomllib.loads((INFRA / "pyproject.toml").read_text())
    pinned = set(pyproject["project"]["dependencies"])
    lines = render("requirements.txt", "aws-eks").splitlines()
    required = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    if is_template() or AWS_MODULE.exists():
        assert required == pinned
    else:
        assert required < pinned
    policy_lines = (INFRA / "policy" / "requirements.txt").read_text().split()
    assert set(policy_lines) <= pinned
