"""`evals run --model CANDIDATE --compare-to BASE`: both models run on the same items
through a scripted upstream serving two or more "models" with known differences; the
paired differences, the non-inferiority and superiority gates, and the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evals.cli import app

ITEMS = [(f"q{i}", f"Which code word is number {i}?", f"word{i}") for i in range(12)]
OTHER = [(f"o{i}", f"Repeat the colour {c}.", c) for i, c in enumerate(["red", "blue", "green"])]


def suite_yaml(name: str) -> str:
    return f"""
name: {name}
dataset: {name}.jsonl
scorers:
  - type: includes
  - type: token_f1
"""


def replies(right: range) -> list[dict[str, Any]]:
    """Right answers for the items in `right`, a wrong one for the others."""
    out = []
    for i, question, target in ITEMS:
        index = int(i[1:])
        out.append({"match": question, "content": target if index in right else "no idea"})
    return out + [{"match": q, "content": t} for _, q, t in OTHER]


MODELS = {
    "tuned": {"replies": replies(range(12))},  # 12/12
    "base": {"replies": replies(range(6))},  # 6/12
    "twin": {"replies": replies(range(6))},  # the same answers as base
    "broken": {"replies": replies(range(2))},  # 2/12
}


@pytest.fixture
def upstream(scripted_upstream):
    return scripted_upstream(models=MODELS)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream) -> Path:
    suites, datasets = tmp_path / "suites", tmp_path / "datasets"
    suites.mkdir()
    datasets.mkdir()
    for name, rows in (("codes", ITEMS), ("colours", OTHER)):
        (suites / f"{name}.yaml").write_text(suite_yaml(name))
        lines = [json.dumps({"id": i, "input": q, "target": t}) for i, q, t in rows]
        (datasets / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALS_SUITES_DIR", str(suites))
    monkeypatch.setenv("EVALS_DATASETS_DIR", str(datasets))
    monkeypatch.setenv("EVALS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("EVALS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVALS_BASE_URL", upstream.v1)
    return tmp_path


def run(workspace: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["run", "--run-id", "r", "-s", "codes", "-s", "colours", *args]
    )
    report: dict[str, Any] = json.loads((workspace / "reports/r/report.json").read_text())
    report["exit"], report["output"] = result.exit_code, result.output
    return report


def differences(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["suite"], d["metric"]): d for d in report["comparison"]["differences"]}


def failed(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (c["suite"], c["metric"], c["kind"]) for c in report["gate"]["checks"] if not c["passed"]
    }


def test_the_better_model_passes_the_gate_and_the_report_shows_both(workspace, upstream):
    report = run(
        workspace,
        "--model",
        "tuned",
        "--compare-to",
        "base",
        "--non-inferior",
        "--better-on",
        "codes",
    )
    assert report["exit"] == 0, report["output"]
    assert report["model"] == "tuned" and report["comparison"]["base_model"] == "base"
    gain = differences(report)[("codes", "includes")]
    assert gain["verdict"] == "better"
    assert (gain["base"], gain["candidate"]) == (0.5, 1.0)
    assert gain["difference"]["mean"] == pytest.approx(0.5)
    assert gain["difference"]["n"] == 12
    assert gain["difference"]["ci_low"] > 0  # paired: six items better, none worse
    same = differences(report)[("colours", "includes")]["difference"]
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    kinds = {(c["suite"], c["kind"]) for c in report["gate"]["checks"]}
    assert {("codes", "superiority"), ("colours", "non_inferiority")} <= kinds
    base_suites = {s["name"]: s for s in report["comparison"]["base_suites"]}
    assert base_suites["codes"]["metrics"]["includes"]["summary"]["mean"] == 0.5
    # both models were asked every item
    asked = [b["body"]["model"] for b in upstream.stats()["bodies"]]
    assert asked.count("tuned") == 15 and asked.count("base") == 15
    markdown = (workspace / "reports/r/report.md").read_text()
    assert "Candidate `tuned` against base `base`" in markdown
    assert "### Candidate `tuned`" in markdown and "### Base `base`" in markdown
    assert "| codes | includes | 0.500 | 1.000 | +0.500 |" in markdown
    html = (workspace / "reports/r/report.html").read_text()
    assert "Candidate against base" in html and "base: Suite codes" in html


def test_the_worse_model_fails_non_inferiority(workspace):
    report = run(workspace, "--model", "broken", "--compare-to", "base", "--non-inferior")
    assert report["exit"] == 1, report["output"]
    assert failed(report) == {
        ("codes", "includes", "non_inferiority"),
        ("codes", "token_f1", "non_inferiority"),
    }
    loss = differences(report)[("codes", "includes")]
    assert loss["difference"]["mean"] == pytest.approx(-4 / 12)
    check = next(c for c in report["gate"]["checks"] if c["metric"] == "includes")
    assert check["limit"] == -0.05 and "not shown" in check["message"]
    assert "Gate failed" in (workspace / "reports/r/report.md").read_text()


def test_an_equal_model_is_non_inferior_but_not_better(workspace):
    report = run(
        workspace,
        "--model", "twin", "--compare-to", "base", "--non-inferior", "--margin", "0.1",
        "--better-on", "codes.includes",
    )  # fmt: skip
    assert report["exit"] == 1, report["output"]
    assert failed(report) == {("codes", "includes", "superiority")}
    assert differences(report)[("codes", "includes")]["verdict"] == "within noise"
    check = next(c for c in report["gate"]["checks"] if c["kind"] == "non_inferiority")
    assert check["limit"] == -0.1


def test_comparison_without_a_gate_only_reports(workspace):
    report = run(workspace, "--model", "broken", "--compare-to", "base")
    assert report["exit"] == 0, report["output"]
    assert differences(report)[("codes", "includes")]["difference"]["ci_high"] < 0
    assert not any(c["kind"] == "non_inferiority" for c in report["gate"]["checks"])


def test_gate_options_need_a_base(workspace):
    result = CliRunner().invoke(app, ["run", "-s", "codes", "--non-inferior"])
    assert result.exit_code == 2
    assert "need --compare-to" in result.output
    result = CliRunner().invoke(
        app, ["run", "-s", "codes", "--compare-to", "base", "--better-on", "nope"]
    )
    assert result.exit_code == 1
