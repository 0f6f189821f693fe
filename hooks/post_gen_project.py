"""Remove the parts the answers did not select, then print the next steps.

Which paths belong to which option is data (`.optional_parts.toml` at the root of the
generated project, deleted once applied); this script only applies it. It touches no
network.
"""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

MANIFEST = ".optional_parts.toml"


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
    print(next_steps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}"""), Path.cwd()))
