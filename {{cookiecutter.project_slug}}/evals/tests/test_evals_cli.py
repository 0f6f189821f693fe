"""The run command end to end against a scripted upstream: reports, gate, exit codes,
retries, the response cache, baselines and compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.cli import app
from tests.support.processes import free_port

QUESTIONS = [
    ("q1", "What is the capital of France?", "Paris", "geo"),
    ("q2", "Where is the Eiffel Tower?", "Paris", "geo"),
    ("q3", "What is 2 plus 2?", "4", "math"),
    ("q4", "What is the opposite of hot?", "cold", "language"),
]

SUITE = """
name: mini
dataset: mini.jsonl
request:
  max_tokens: 8
scorers:
  - type: includes
  - type: token_f1
thresholds:
  includes: 0.4
"""

OPTIONAL_SUITE = """
name: optional
dataset: absent.jsonl
optional: true
scorers:
  - type: includes
"""


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    suites, datasets = tmp_path / "suites", tmp_path / "datasets"
    suites.mkdir()
    datasets.mkdir()
    (suites / "mini.yaml").write_text(SUITE)
    (suites / "optional.yaml").write_text(OPTIONAL_SUITE)
    rows = [
        {"id": i, "input": q, "target": t, "metadata": {"category": c}} for i, q, t, c in QUESTIONS
    ]
    (datasets / "mini.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALS_SUITES_DIR", str(suites))
    monkeypatch.setenv("EVALS_DATASETS_DIR", str(datasets))
    monkeypatch.setenv("EVALS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("EVALS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVALS_MODEL", "scripted")
    monkeypatch.setenv("EVALS_API_KEY", "sk-test-secret")
    return tmp_path


def evals(*args: str):
    return CliRunner().invoke(app, list(args))


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("EVALS_BASE_URL", url)


def report_of(workspace: Path, run_id: str) -> dict:
    return json.loads((workspace / "reports" / run_id / "report.json").read_text())


def test_run_writes_three_reports_and_passes_the_gate(workspace, scripted_upstream, monkeypatch):
    upstream = scripted_upstream(answer="The capital of France is Paris.")
    point_at(monkeypatch, upstream.v1)
    result = evals("run", "--suite", "mini", "--run-id", "first")
    assert result.exit_code == 0, result.output
    out = workspace / "reports" / "first"
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "report.html"}
    data = report_of(workspace, "first")
    suite = data["suites"][0]
    # two of four answers contain their target ("Paris")
    assert suite["metrics"]["includes"]["summary"]["mean"] == pytest.approx(0.5)
    assert suite["metrics"]["includes"]["per_category"]["geo"]["mean"] == 1.0
    assert data["gate"]["passed"] is True
    assert "sk-test-secret" not in (out / "report.json").read_text()
    sent = upstream.stats()["bodies"][0]
    assert sent["headers"]["authorization"] == "Bearer sk-test-secret"
    assert sent["headers"]["x-cache-bypass"] == "1"
    assert sent["body"]["temperature"] == 0 and sent["body"]["max_tokens"] == 8
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # self-contained: nothing to fetch
    assert not re.search(r"<(script|link|iframe)\b|(src|href)=\"(https?:)?//", html)
    markdown = (out / "report.md").read_text()
    assert "Gate passed" in markdown and "| includes |" in markdown


def test_raising_a_threshold_above_the_score_fails_the_gate(
    workspace, scripted_upstream, monkeypatch
):
    point_at(monkeypatch, scripted_upstream(answer="Paris").v1)
    result = evals("run", "--suite", "mini", "--threshold", "mini.includes=0.9", "--run-id", "r")
    assert result.exit_code == 1, result.output
    failures = [c for c in report_of(workspace, "r")["gate"]["checks"] if not c["passed"]]
    assert [(c["metric"], c["limit"]) for c in failures] == [("includes", 0.9)]
    assert "Gate failed" in (workspace / "reports" / "r" / "report.md").read_text()


def test_rate_limited_requests_are_retried(workspace, scripted_upstream, monkeypatch):
    upstream = scripted_upstream(answer="Paris", fail_first=3, fail_status=429)
    point_at(monkeypatch, upstream.v1)
    result = evals("run", "--suite", "mini", "--run-id", "r", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    data = report_of(workspace, "r")
    assert data["settings"]["retries"] == 3
    assert data["suites"][0]["n_errors"] == 0
    assert upstream.stats()["chat_requests"] == 4 + 3


def test_failing_upstream_fails_the_run_with_exit_code_2(workspace, scripted_upstream, monkeypatch):
    monkeypatch.setenv("EVALS_MAX_RETRIES", "1")
    point_at(monkeypatch, scripted_upstream(fail_first=1000, fail_status=500).v1)
    result = evals("run", "--suite", "mini", "--run-id", "r")
    assert result.exit_code == 2, result.output
    data = report_of(workspace, "r")
    assert data["gate"] is None
    assert "4/4 requests failed" in data["errors"][0]


def test_timed_out_requests_are_not_retried(workspace, scripted_upstream, monkeypatch):
    monkeypatch.setenv("EVALS_REQUEST_TIMEOUT_S", "0.3")
    upstream = scripted_upstream(answer="Paris", delay=1.0)
    point_at(monkeypatch, upstream.v1)
    result = evals("run", "--suite", "mini", "--run-id", "r")
    assert result.exit_code == 2, result.output
    assert upstream.stats()["chat_requests"] == 4  # one attempt per sample
    assert "ReadTimeout" in report_of(workspace, "r")["suites"][0]["samples"][0]["error"]


def test_unreachable_endpoint_fails_the_run_with_exit_code_2(workspace, monkeypatch):
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}/v1")
    result = evals("run", "--suite", "mini", "--run-id", "r")
    assert result.exit_code == 2
    assert "cannot reach" in report_of(workspace, "r")["errors"][0]


def test_cached_responses_are_not_generated_again(workspace, scripted_upstream, monkeypatch):
    upstream = scripted_upstream(answer="Paris")
    point_at(monkeypatch, upstream.v1)
    assert evals("run", "--suite", "mini", "--run-id", "a").exit_code == 0
    assert upstream.stats()["chat_requests"] == 4
    assert evals("run", "--suite", "mini", "--run-id", "b").exit_code == 0
    assert upstream.stats()["chat_requests"] == 4
    assert report_of(workspace, "b")["settings"]["cache"] == {"hits": 4, "misses": 0}
    assert evals("run", "--suite", "mini", "--run-id", "c", "--no-cache").exit_code == 0
    assert upstream.stats()["chat_requests"] == 8


def test_regression_against_a_baseline_fails_the_gate(workspace, scripted_upstream, monkeypatch):
    good = scripted_upstream(answer="Paris 4 cold")
    point_at(monkeypatch, good.v1)
    assert evals("run", "--suite", "mini", "--run-id", "good").exit_code == 0
    assert evals("baseline", "save", "good", "--to", "baseline.json").exit_code == 0
    worse = scripted_upstream(answer="I do not know")
    point_at(monkeypatch, worse.v1)
    # the threshold is lowered to zero, so only the regression check can fail
    args = ["--run-id", "worse", "--baseline", "baseline.json", "-t", "mini.includes=0"]
    result = evals("run", "--suite", "mini", *args)
    assert result.exit_code == 1, result.output
    failed = [c for c in report_of(workspace, "worse")["gate"]["checks"] if not c["passed"]]
    assert {(c["metric"], c["kind"]) for c in failed} == {
        ("includes", "regression"),
        ("token_f1", "regression"),
    }
    compared = evals("compare", "good", "worse")
    assert compared.exit_code == 0
    assert re.search(r"\| mini \| includes \| 1\.000 .*\| 0\.000 .*\| -1\.000 \|", compared.output)
    # the same four items on both sides: paired, every item one point worse
    assert "| -1.000 | [-1.000, -1.000] | significant |" in compared.output


def test_a_drop_within_the_confidence_interval_is_not_a_regression(
    workspace, scripted_upstream, monkeypatch
):
    point_at(monkeypatch, scripted_upstream(answer="Paris 4 cold").v1)
    assert evals("run", "--suite", "mini", "--run-id", "good").exit_code == 0
    assert evals("baseline", "save", "good", "--to", "baseline.json").exit_code == 0
    point_at(monkeypatch, scripted_upstream(answer="Paris").v1)
    # 1.0 -> 0.5 on four samples: the bootstrap CI still reaches 1.0, so this is noise
    result = evals("run", "--suite", "mini", "--run-id", "r", "--baseline", "baseline.json")
    assert result.exit_code == 0, result.output


def test_optional_suite_without_dataset_is_skipped(workspace, scripted_upstream, monkeypatch):
    point_at(monkeypatch, scripted_upstream(answer="Paris").v1)
    result = evals("run", "--suite", "all", "--run-id", "all")
    assert result.exit_code == 0, result.output
    statuses = {s["name"]: s["status"] for s in report_of(workspace, "all")["suites"]}
    assert statuses == {"mini": "ok", "optional": "skipped"}


def test_unknown_suite_is_a_run_failure(workspace):
    result = evals("run", "--suite", "nope")
    assert result.exit_code == 2
    assert "unknown suite 'nope'" in result.output
