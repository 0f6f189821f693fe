"""`cruft create` bakes from the template repository and records where it came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.matrix import COOKIECUTTER_JSON, ROOT


def test_cruft_create_records_the_template_version(tmp_path: Path) -> None:
    # cruft clones the template: give it a repository holding the working tree as it is.
    repo = tmp_path / "template"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", ".cache", "build", "__pycache__", ".*_cache"
        ),
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "template"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()

    out = tmp_path / "out"
    cruft = Path(sys.executable).parent / "cruft"
    proc = subprocess.run(
        [str(cruft), "create", "--no-input", "--output-dir", str(out), str(repo)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    project = out / "genai-app"
    record = json.loads((project / ".cruft.json").read_text())
    assert record["commit"] == commit
    context = record["context"]["cookiecutter"]
    assert context["_template_version"] == COOKIECUTTER_JSON["_template_version"]
    assert context["project_slug"] == "genai-app"
    assert (project / "gateway").is_dir()
