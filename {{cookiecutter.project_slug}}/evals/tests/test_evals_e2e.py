"""End to end: the smoke suite and a short perf run against the real stack
(gateway -> model services with SmolLM2-135M and MiniLM), through the CLI as CI runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import source_path

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    env: dict[str, str]
    direct_url: str | None


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Target:
    """The gateway in front of the real models; the model services directly where the
    gateway fixture is not available."""
    try:
        gateway = request.getfixturevalue("gateway_server")
    except pytest.FixtureLookupError:
        gateway = None
    llm = request.getfixturevalue("llm_server")
    if gateway is not None:
        env = {"EVALS_BASE_URL": f"{gateway.base_url}/v1", "EVALS_API_KEY": gateway.master_key}
    else:
        embedder = request.getfixturevalue("embedder_server")
        env = {
            "EVALS_BASE_URL": f"{llm.base_url}/v1",
            "EVALS_EMBEDDINGS_BASE_URL": f"{embedder.base_url}/v1",
        }
    env["EVALS_MODEL"] = llm.model
    return Target(env=env, direct_url=f"{llm.base_url}/v1")


def evals(target: Target, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **target.env,
        "EVALS_REPORTS_DIR": str(tmp / "reports"),
        "EVALS_CACHE_DIR": str(tmp / "cache"),
        "PYTHONPATH": source_path("evals"),
    }
    return subprocess.run(
        [sys.executable, "-m", "evals", *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_three_reports(folder: Path) -> dict:
    assert {p.name for p in folder.iterdir()} == {"report.json", "report.md", "report.html"}
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"<(script|link|iframe)\b|(src|href)=\"(https?:)?//", html)
    return json.loads((folder / "report.json").read_text())


def test_smoke_suite_passes_its_gate_and_fails_a_raised_threshold(target, tmp_path):
    done = evals(target, tmp_path, "run", "--suite", "smoke", "--run-id", "smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    report = assert_three_reports(tmp_path / "reports" / "smoke")
    suite = report["suites"][0]
    assert suite["n_errors"] == 0 and suite["n_samples"] == 14
    includes = suite["metrics"]["includes"]["summary"]
    assert includes["ci_low"] <= includes["mean"] <= includes["ci_high"]
    assert suite["metrics"]["embedding_similarity"]["summary"]["mean"] > 0
    assert suite["usage"]["completion_tokens"] > 0
    judge = suite["judge"][0]
    assert judge["n"] == 10 and judge["gates"] == (judge["kappa"] >= judge["min_kappa"])

    raised = min(includes["mean"] + 0.01, 1.01)
    again = evals(
        target, tmp_path, "run", "--suite", "smoke", "--run-id", "raised",
        "--threshold", f"smoke.includes={raised}",
    )  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    rerun = assert_three_reports(tmp_path / "reports" / "raised")
    assert rerun["settings"]["cache"]["misses"] == 0  # re-scored from the response cache
    failed = [c for c in rerun["gate"]["checks"] if not c["passed"]]
    assert [(c["metric"], c["kind"]) for c in failed] == [("includes", "threshold")]


def test_perf_suite_measures_streamed_requests(target, tmp_path):
    done = evals(
        target, tmp_path, "perf", "--concurrency", "1,2", "--num-requests", "4",
        "--max-tokens", "16", "--warmup", "1", "--direct-url", str(target.direct_url),
        "--run-id", "perf",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    perf = assert_three_reports(tmp_path / "reports" / "perf")["perf"]
    endpoint = [s for s in perf["scenarios"] if s["target"] == "endpoint"]
    assert [s["concurrency"] for s in endpoint] == [1, 2]
    for scenario in endpoint:
        assert scenario["completed"] == 4 and scenario["error_rate"] == 0
        assert scenario["tokens_from_usage"] == 1.0  # counts from the streamed usage
        assert 0 < scenario["total_output_tokens"] <= 4 * 16
        assert scenario["ttft_ms"]["p50"] <= scenario["e2e_ms"]["p50"]
        assert scenario["itl_ms"]["n"] > 0 and scenario["tpot_ms"]["n"] > 0
    assert perf["buffering"] is not None


def endpoint_takes(target: Target, field: str, value: object) -> bool:
    """Whether the model service answers a request carrying `field` (or refuses it)."""
    body = {
        "model": target.env["EVALS_MODEL"],
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
        field: value,
    }
    response = httpx.post(f"{target.direct_url}/chat/completions", json=body, timeout=120)
    assert response.status_code in (200, 400), response.text
    return response.status_code == 200


def test_extraction_uses_json_schema_where_the_backend_takes_it(target, tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    supported = endpoint_takes(target, "response_format", response_format)
    done = evals(target, tmp_path, "run", "--suite", "extraction", "--run-id", "ex")
    suite = assert_three_reports(tmp_path / "reports" / "ex")["suites"][0]
    assert suite["n_errors"] == 0, done.stdout + done.stderr
    assert suite["metrics"]["schema_valid"]["summary"]["n"] == 8
    if supported:
        assert suite["structured_output"].startswith("json_schema on 8/8 answered")
    else:
        assert "on 0/8 answered" in suite["structured_output"]
        assert "the endpoint refused it (400" in suite["structured_output"]


def test_tools_suite_scores_tool_calls_or_reports_the_refusal(target, tmp_path):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    supported = endpoint_takes(target, "tools", tools)
    done = evals(target, tmp_path, "run", "--suite", "tools", "--run-id", "tools")
    report = assert_three_reports(tmp_path / "reports" / "tools")
    suite = report["suites"][0]
    if supported:
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert suite["n_errors"] == 0
        assert suite["metrics"]["tool_choice"]["summary"]["n"] == 14
    else:
        assert done.returncode == 2
        assert "14/14 requests failed" in report["errors"][0]
        assert "400" in suite["samples"][0]["error"]
