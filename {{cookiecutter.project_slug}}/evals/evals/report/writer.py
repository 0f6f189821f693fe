"""Write the three report files into reports/<run-id>/."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from evals.report.html import render_html
from evals.report.markdown import render_markdown
from evals.results import Report

LATEST_POINTER = "LATEST"


def new_run_id(label: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
    return f"{stamp}-{safe}"


def write_report(report: Report, reports_dir: Path) -> Path:
    out = reports_dir / report.run_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    (reports_dir / LATEST_POINTER).write_text(report.run_id + "\n", encoding="utf-8")
    return out


def resolve_report(ref: str, reports_dir: Path) -> Path:
    """A report.json from a path, a run directory, a run id, or `latest`."""
    path = Path(ref)
    if ref == "latest":
        pointer = reports_dir / LATEST_POINTER
        if not pointer.is_file():
            raise FileNotFoundError(f"no runs yet in {reports_dir}")
        path = reports_dir / pointer.read_text(encoding="utf-8").strip()
    elif not path.exists():
        path = reports_dir / ref
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"report not found: {ref}")
    return path


def load_report(ref: str, reports_dir: Path) -> Report:
    return Report.model_validate_json(resolve_report(ref, reports_dir).read_text(encoding="utf-8"))
