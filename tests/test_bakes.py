"""Bake every answer set of the matrix and check each bake like a user's CI would.

Per bake: the exact file set, no leftover template markers, ruff (lint and format),
mypy on the packages, the GitHub workflow against its schema, and the baked project's
own fast test suite. The slow end-to-end suites run in test_baked_e2e.py.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bakery, baked_test_env, python_tool, run
from tests.matrix import (
    COOKIECUTTER_JSON,
    DEFAULT,
    ROOT,
    answers,
    bake_id,
    folders_for_answers,
    unique_bakes,
)

BAKES = unique_bakes()
IDS = [bake_id(b) for b in BAKES]

# Written by tools and runs, never part of a bake.
IGNORED_PARTS = {
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".venv",
    ".dev",
}
IGNORED_TOP = {"models", "reports", "adapters", "build"}
# Written by the post-gen hook, not copied from the template.
HOOK_WRITTEN = {".env"}

# What each answer must add or remove, stated independently of the hook's manifest.
REQUIRED_TOP_LEVEL = [
    "common", "gateway", "services/model", "evals", "finetune", "tests", "docs", "README.md",
    "compose.yaml", "Makefile", ".env.example", ".env", "docs/security.md", "pyproject.toml",
    ".pre-commit-config.yaml", "requirements-dev.txt",
]  # fmt: skip
INFRA = ["infra/Pulumi.yaml", "infra/__main__.py", "docs/deploy.md"]
RAG = ["gateway/gateway/rag", "docs/rag.md", "evals/evals/datasets/rag.jsonl"]
OPTION_PATHS: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    # (option, value): (must exist, must not exist)
    ("deploy_target", "kubernetes"): (INFRA, ["infra/blueprint_infra/aws"]),
    ("deploy_target", "aws-eks"): ([*INFRA, "infra/blueprint_infra/aws/__init__.py"], []),
    ("deploy_target", "none"): ([], ["infra", "docs/deploy.md"]),
    ("enable_rag", "yes"): (RAG, []),
    ("enable_rag", "no"): ([], RAG),
    ("observability", "otel-lgtm"): (["observability"], []),
    ("observability", "otlp-external"): (["observability"], []),
    ("observability", "none"): ([], ["observability"]),
    ("ci_provider", "github"): ([".github/workflows/ci.yml"], []),
    ("ci_provider", "none"): ([], [".github"]),
}  # fmt: skip

TEMPLATE_MARKER = re.compile(r"(?<!\$)\{\{|\{%|(?<![$#])\{#")
PY_TEMPLATE_MARKER = re.compile(r"\{\{\s*cookiecutter|\{%")


def _ignored(rel: Path) -> bool:
    return bool(set(rel.parts) & IGNORED_PARTS) or rel.parts[0] in IGNORED_TOP


def files_under(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not _ignored(p.relative_to(root))
    }


def expected_files(template_repo: Path, chosen: dict[str, Any]) -> set[str]:
    """Template files minus what the manifest removes for these answers."""
    template = template_repo / "{{cookiecutter.project_slug}}"
    manifest = tomllib.loads((template / ".optional_parts.toml").read_text())["part"]
    removed: set[str] = set()
    for part in manifest:
        if all(
            chosen.get(k) in (v if isinstance(v, list) else [v]) for k, v in part["when"].items()
        ):
            for pattern in part["remove"]:
                for path in template.glob(pattern):
                    removed |= {str(path.relative_to(template))}
                    if path.is_dir():
                        removed |= {
                            str(p.relative_to(template)) for p in path.rglob("*") if p.is_file()
                        }
    # The manifest itself is deleted once the hook has applied it.
    return (files_under(template) - removed - {".optional_parts.toml"}) | HOOK_WRITTEN


@pytest.fixture(scope="module", params=BAKES, ids=IDS)
def bake(request: pytest.FixtureRequest, bakery: Bakery) -> tuple[Path, dict[str, Any]]:
    overrides: dict[str, str] = request.param
    return bakery.bake(overrides), answers(overrides)


def test_file_set_is_exact(bake: tuple[Path, dict[str, Any]], pytestconfig: pytest.Config) -> None:
    project, chosen = bake
    actual = files_under(project)
    expected = expected_files(Path(pytestconfig.option.template), chosen)
    assert sorted(actual - expected) == [], "unexpected files"
    assert sorted(expected - actual) == [], "missing files"
    for rel in REQUIRED_TOP_LEVEL:
        assert (project / rel).exists(), rel
    for (option, value), (present, absent) in OPTION_PATHS.items():
        if chosen[option] == value:
            for rel in present:
                assert (project / rel).exists(), f"{option}={value} must keep {rel}"
            for rel in absent:
                assert not (project / rel).exists(), f"{option}={value} must remove {rel}"


def test_no_leftover_template_markers(bake: tuple[Path, dict[str, Any]]) -> None:
    project, _ = bake
    verbatim = COOKIECUTTER_JSON["_copy_without_render"]
    offenders = []
    for rel in sorted(files_under(project)):
        try:
            text = (project / rel).read_text()
        except UnicodeDecodeError:
            continue
        if rel.endswith(".py"):
            if PY_TEMPLATE_MARKER.search(text):
                offenders.append(rel)
        elif not any(fnmatch.fnmatch(rel, p) for p in verbatim) and TEMPLATE_MARKER.search(text):
            offenders.append(rel)
    assert offenders == []


def test_template_version_is_recorded(bake: tuple[Path, dict[str, Any]]) -> None:
    project, _ = bake
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    recorded = pyproject["tool"]["genai-blueprint"]["template-version"]
    assert recorded == COOKIECUTTER_JSON["_template_version"]


def test_ruff(bake: tuple[Path, dict[str, Any]]) -> None:
    project, _ = bake
    run(python_tool("ruff", "check", "--no-cache", "."), project)
    run(python_tool("ruff", "format", "--check", "--no-cache", "."), project)


def packages(project: Path) -> list[str]:
    candidates = [
        "common/service_common",
        "gateway/gateway",
        "services/model/model_service",
        "evals/evals",
        "finetune/finetune",
        "infra/blueprint_infra",
        "devstack",
    ]
    return [c for c in candidates if (project / c).is_dir()]


def test_mypy(bake: tuple[Path, dict[str, Any]]) -> None:
    project, _ = bake
    # One cache per xdist worker: bakes share module names, so the cache makes every
    # bake after the first fast, and workers never write the same cache at once.
    cache = ROOT / ".cache" / f"mypy-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    run(python_tool("mypy", "--cache-dir", str(cache), *packages(project)), project)


def test_github_workflow_is_valid(bake: tuple[Path, dict[str, Any]]) -> None:
    project, chosen = bake
    if chosen["ci_provider"] != "github":
        assert not (project / ".github").exists()
        return
    workflows = sorted(str(p) for p in (project / ".github" / "workflows").glob("*.yml"))
    assert workflows
    checker = Path(sys.executable).parent / "check-jsonschema"
    run([str(checker), "--builtin-schema", "vendor.github-workflows", *workflows], project)


def test_dockerfiles_lint_clean(bake: tuple[Path, dict[str, Any]]) -> None:
    project, _ = bake
    dockerfiles = sorted(str(p.relative_to(project)) for p in project.rglob("Dockerfile*"))
    assert {
        "gateway/Dockerfile",
        "services/model/Dockerfile.cpu",
        "evals/Dockerfile",
        "finetune/Dockerfile",
    } <= set(dockerfiles)
    hadolint = Path(sys.executable).parent / "hadolint"
    run([str(hadolint), *dockerfiles], project)


def test_baked_fast_suite(bake: tuple[Path, dict[str, Any]]) -> None:
    project, chosen = bake
    overrides = {k: v for k, v in chosen.items() if DEFAULT[k] != v}
    # The defaults run the whole fast suite (no folders named). A bake that changes one
    # answer runs the folders that answer touches. A pairwise bake changes several; the
    # folders of each were run by its one-answer bake, so it runs the root tests/ that
    # check the rendered configuration, where answers interact.
    if len(overrides) > 1:
        folders = ["tests"]
    else:
        folders = [d for d in folders_for_answers(overrides) if (project / d).is_dir()]
    proc = run(
        python_tool(
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not e2e and not vllm and not bench",
            *folders,
        ),
        project,
        env=baked_test_env(),
    )
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-2000:]


def test_pipeline_tools_available() -> None:
    # The checks above need these; a missing one must fail, not skip.
    for tool in ("check-jsonschema", "hadolint"):
        assert (Path(sys.executable).parent / tool).exists(), tool
    assert subprocess.run(python_tool("ruff", "--version"), capture_output=True).returncode == 0
