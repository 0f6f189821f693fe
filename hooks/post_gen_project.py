"""Remove the parts the answers did not select, write `.env`, then print the next steps.

Which paths belong to which option is data (`.optional_parts.toml` at the root of the
generated project, deleted once applied); this script only applies it. `.env` is written
from `.env.example` with a random master key and Redis password by the project's own
`devstack/envfile.py` (the code `make env` runs), and never over an existing `.env`. It
touches no network.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

MANIFEST = ".optional_parts.toml"
ENV_WRITER = "devstack/envfile.py"


def load_manifest(project: Path) -> list[dict[str, Any]]:
    with (project / MANIFEST).open("rb") as fh:
        parts: list[dict[str, Any]] = tomllib.load(fh)["part"]
    return parts


def part_applies(when: dict[str, Any], answers: dict[str, Any]) -> bool:
    for key, expected in when.items():
        allowed = expected if isinstance(expected, list) else [expected]
        if answers.get(key) not in allowed:
            return False
    return True


def paths_to_remove(
    project: Path, parts: list[dict[str, Any]], answers: dict[str, Any]
) -> list[Path]:
    found: list[Path] = []
    for part in parts:
        if part_applies(part["when"], answers):
            for pattern in part["remove"]:
                found.extend(sorted(project.glob(pattern)))
    return found


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_empty_dirs(project: Path) -> None:
    for directory in sorted((p for p in project.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


def load_env_writer(project: Path) -> ModuleType:
    """The project's `devstack/envfile.py` (standard library only), loaded by path."""
    spec = importlib.util.spec_from_file_location("blueprint_envfile", project / ENV_WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_env(project: Path) -> str:
    """Write `.env` with fresh secrets unless one exists; a line saying which happened."""
    written = load_env_writer(project).write_env(project)
    if written is None:
        return "Kept the existing .env (its keys are unchanged)."
    return "Wrote .env with a random GATEWAY_MASTER_KEY and REDIS_PASSWORD (keep it secret)."


def next_steps(answers: dict[str, Any]) -> str:
    slug = answers["project_slug"]
    lines = [
        f"\nCreated {slug}. Next steps:",
        f"  cd {slug}",
        "  make install            # virtual environment with every service",
        "  make models             # fetch the models (OFFLINE=1 without a model hub)",
        "  make dev                # the whole stack as local processes (or: docker compose up)",
    ]
    if answers.get("deploy_target") != "none":
        lines.append("  make preview            # what `pulumi up` would deploy (docs/deploy.md)")
    lines.append("Read README.md for the rest.")
    return "\n".join(lines)


def main(answers: dict[str, Any], project: Path) -> int:
    parts = load_manifest(project)
    remove(paths_to_remove(project, parts, answers))
    (project / MANIFEST).unlink()
    remove_empty_dirs(project)
    print(write_env(project))
    print(next_steps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}"""), Path.cwd()))
