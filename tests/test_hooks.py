"""Unit tests for the hooks, plus the pre-gen hook rejecting bakes for real."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.matrix import DEFAULT, ROOT, UNSUPPORTED, answers, unique_bakes


def load_hook(name: str) -> ModuleType:
    # The hooks are plain Python until cookiecutter renders them (the answers arrive
    # as a JSON string literal), so they import as they are.
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MANIFEST = ROOT / "{{cookiecutter.project_slug}}" / ".optional_parts.toml"
pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")


def full_answers(**overrides: Any) -> dict[str, Any]:
    base = {
        "project_name": "GenAI App",
        "project_slug": "genai-app",
        "author_email": "you@example.com",
        "llm_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        **DEFAULT,
    }
    return {**base, **overrides}


@pytest.mark.parametrize("overrides", unique_bakes(), ids=str)
def test_every_matrix_bake_is_valid(overrides: dict[str, str]) -> None:
    assert pre_gen.validate(full_answers(**overrides)) == []


@pytest.mark.parametrize(("overrides", "reason"), UNSUPPORTED, ids=[r for _, r in UNSUPPORTED])
def test_validate_rejects_with_a_one_line_reason(overrides: dict[str, str], reason: str) -> None:
    errors = pre_gen.validate(full_answers(**overrides))
    assert errors, f"{overrides} was accepted"
    assert any(reason in error for error in errors), errors
    assert all("\n" not in error for error in errors)


@pytest.mark.parametrize(
    "model",
    [
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "/models/my-model",
        "./models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ],
)
def test_model_references_accepted(model: str) -> None:
    assert pre_gen.validate(full_answers(llm_model=model)) == []


def test_unknown_choice_is_rejected() -> None:
    errors = pre_gen.validate(full_answers(serving_backend="tgi"))
    assert errors == ["serving_backend must be one of auto, vllm, transformers (got 'tgi')"]


def test_main_prints_errors_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert pre_gen.main(full_answers(project_slug="Bad Slug")) == 1
    assert "ERROR: project_slug" in capsys.readouterr().err
    assert pre_gen.main(full_answers()) == 0


def test_manifest_parts_name_only_known_options() -> None:
    manifest = tomllib.loads(MANIFEST.read_text())
    for part in manifest["part"]:
        for key, value in part["when"].items():
            allowed = DEFAULT.keys()
            assert key in allowed, f"{part['name']}: unknown option {key}"
            values = value if isinstance(value, list) else [value]
            choices = pre_gen.CHOICES[key]
            assert set(values) <= set(choices), f"{part['name']}: {values} not in {choices}"


def _project(tmp_path: Path) -> Path:
    for rel in [
        "infra/__main__.py",
        "infra/blueprint_infra/app.py",
        "docs/deploy.md",
        "docs/rag.md",
        "gateway/gateway/rag/chain.py",
        "gateway/gateway/app.py",
        "gateway/tests/test_rag_ingest.py",
        "gateway/tests/test_api.py",
        ".github/workflows/ci.yml",
    ]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return tmp_path


def test_post_gen_removes_only_unselected_parts(tmp_path: Path) -> None:
    project = _project(tmp_path)
    parts = post_gen.load_manifest(MANIFEST.parent)
    chosen = answers({"deploy_target": "none", "enable_rag": "no", "ci_provider": "none"})
    post_gen.remove(post_gen.paths_to_remove(project, parts, chosen))
    post_gen.remove_empty_dirs(project)
    left = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert left == ["gateway/gateway/app.py", "gateway/tests/test_api.py"]
    assert not (project / "infra").exists()
    assert not (project / ".github").exists()


def test_post_gen_keeps_everything_for_defaults(tmp_path: Path) -> None:
    project = _project(tmp_path)
    parts = post_gen.load_manifest(MANIFEST.parent)
    assert post_gen.paths_to_remove(project, parts, answers({})) == []


def test_part_applies_to_lists_of_values() -> None:
    assert post_gen.part_applies({"deploy_target": ["none", "aws-eks"]}, {"deploy_target": "none"})
    assert not post_gen.part_applies({"deploy_target": ["aws-eks"]}, {"deploy_target": "none"})


def test_next_steps_mention_deploy_only_with_infra() -> None:
    with_infra = post_gen.next_steps(full_answers())
    without = post_gen.next_steps(full_answers(deploy_target="none"))
    assert "make preview" in with_infra
    assert "make preview" not in without
    assert "cd genai-app" in with_infra


@pytest.mark.parametrize(("overrides", "reason"), UNSUPPORTED[:1] + UNSUPPORTED[-2:])
def test_unsupported_bake_fails_in_the_pre_gen_hook(
    cookies: Any, overrides: dict[str, str], reason: str
) -> None:
    result = cookies.bake(extra_context=overrides)
    assert result.exit_code != 0
    assert result.exception is not None
    assert "pre_gen_project" in str(result.exception) or "Hook script failed" in str(
        result.exception
    )
    assert result.project_path is None or not Path(result.project_path).exists()


ENV_WRITER = ROOT / "{{cookiecutter.project_slug}}" / "devstack" / "envfile.py"


def _project_with_env_example(tmp_path: Path) -> Path:
    (tmp_path / "devstack").mkdir(parents=True)
    (tmp_path / "devstack" / "envfile.py").write_text(ENV_WRITER.read_text())
    (tmp_path / ".env.example").write_text(
        "# docs\nGATEWAY_MASTER_KEY=\nREDIS_PASSWORD=\nGATEWAY_PORT=8080\n"
    )
    return tmp_path


def _env_values(project: Path) -> dict[str, str]:
    lines = (project / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_post_gen_writes_env_with_fresh_secrets(tmp_path: Path) -> None:
    first = _project_with_env_example(tmp_path / "a")
    second = _project_with_env_example(tmp_path / "b")
    assert "Wrote .env" in post_gen.write_env(first)
    post_gen.write_env(second)
    values, others = _env_values(first), _env_values(second)
    assert values["GATEWAY_MASTER_KEY"].startswith("sk-")
    assert values["GATEWAY_MASTER_KEY"] != others["GATEWAY_MASTER_KEY"]
    assert values["REDIS_PASSWORD"] and values["REDIS_PASSWORD"] != others["REDIS_PASSWORD"]
    assert values["GATEWAY_PORT"] == "8080"  # everything else exactly as documented
    assert (first / ".env").stat().st_mode & 0o077 == 0  # readable by its owner only


def test_post_gen_keeps_an_existing_env(tmp_path: Path) -> None:
    """A re-bake over a project (cookiecutter -f, --replay) must not change its keys."""
    project = _project_with_env_example(tmp_path)
    (project / ".env").write_text("GATEWAY_MASTER_KEY=sk-the-users-own-key\n")
    assert "Kept the existing .env" in post_gen.write_env(project)
    assert _env_values(project) == {"GATEWAY_MASTER_KEY": "sk-the-users-own-key"}


def test_a_real_bake_has_an_env_with_its_own_key(cookies: Any) -> None:
    keys = []
    for _ in range(2):
        result = cookies.bake()
        assert result.exit_code == 0, result.exception
        project = Path(result.project_path)
        values = _env_values(project)
        assert values["GATEWAY_MASTER_KEY"] not in ("", "sk-dev-master-key-change-me")
        keys.append(values["GATEWAY_MASTER_KEY"])
        example = (project / ".env.example").read_text()
        assert "GATEWAY_MASTER_KEY=\n" in example and "REDIS_PASSWORD=\n" in example
        # cruft update re-bakes in a temporary folder: it must not diff one random .env
        # against another and patch the project's.
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
        assert ".env" in pyproject["tool"]["cruft"]["skip"]
    assert keys[0] != keys[1]


def test_a_re_bake_over_the_project_keeps_its_env(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    from cookiecutter.main import cookiecutter

    def bake() -> Path:
        return Path(
            cookiecutter(
                str(pytestconfig.option.template),
                no_input=True,
                output_dir=str(tmp_path),
                overwrite_if_exists=True,
            )
        )

    project = bake()
    first = _env_values(project)
    assert bake() == project
    assert _env_values(project) == first  # the running stack's keys still work
