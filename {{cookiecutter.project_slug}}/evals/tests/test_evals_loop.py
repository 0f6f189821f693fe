"""The quality loop through the CLI (docs/feedback.md): a real gateway process with
capture on, in front of the scripted mock upstream, on its own real Redis; users rate
answers through /v1/feedback; `evals datasets from-feedback` writes those exchanges,
`evals run` gates them, `evals online --once` exports its metrics over OTLP. The same
loop on SmolLM2 is the `e2e` test at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import MOCK_LLM, GatewayProcess, upstreams_env
from tests.support.otlp import otlp_receiver
from tests.support.processes import source_path

PROJECT = Path(__file__).resolve().parents[2]


def evals_cli(gateway: GatewayProcess, tmp: Path, *args: str, **env: str) -> Any:
    full_env = {
        **os.environ,
        "EVALS_BASE_URL": f"{gateway.base_url}/v1",
        "EVALS_API_KEY": gateway.master_key,
        "EVALS_REPORTS_DIR": str(tmp / "reports"),
        "EVALS_CACHE_DIR": str(tmp / "cache"),
        "EVALS_DATASETS_DIR": str(tmp),
        "PYTHONPATH": source_path("evals"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "evals", *args],
        env=full_env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )


def rate_thirty_chats(gateway: GatewayProcess, model: str, max_tokens: int = 16) -> dict[str, Any]:
    """30 chats by one key, the first 10 rated down (5 with a correction); ids by role."""
    user = {"authorization": f"Bearer {gateway.create_key('user')}"}
    ids, questions = [], [f"Name a colour, please ({n})." for n in range(30)]
    with httpx.Client(base_url=gateway.base_url, headers=user, timeout=120) as client:
        for question in questions:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": max_tokens,
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        for n, request_id in enumerate(ids[:10]):
            feedback = {"request_id": request_id, "rating": "down", "tags": ["colour"]}
            if n < 5:
                feedback["correction"] = "Blue."
            response = client.post("/v1/feedback", json=feedback)
            if response.status_code == 404:  # the record lands just after the answer
                response = client.post("/v1/feedback", json=feedback)
            assert response.status_code == 201, response.text
        up = client.post("/v1/feedback", json={"request_id": ids[20], "rating": "up"})
        assert up.status_code == 201
    return {"ids": ids, "questions": questions, "down": ids[:10], "headers": user}


def check_the_loop(
    gateway: GatewayProcess, tmp_path: Path, model: str, rated: dict[str, Any]
) -> None:
    out = tmp_path / "feedback.jsonl"
    made = evals_cli(gateway, tmp_path, "datasets", "from-feedback", "--rating", "down",
                     "--since", "1d", "--key", "user", "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["input"][0]["content"] for r in rows) == sorted(rated["questions"][:10])
    assert sorted(i for r in rows for i in r["metadata"]["request_ids"]) == sorted(rated["down"])
    assert sum(1 for r in rows if r.get("target") == "Blue.") == 5
    run = evals_cli(gateway, tmp_path, "run", "--suite", "feedback", "--run-id", "fb",
                    "--no-cache", EVALS_MODEL=model)  # fmt: skip
    assert run.returncode in (0, 1), run.stderr  # passed, or the gate failed: never a broken run
    report = json.loads((tmp_path / "reports" / "fb" / "report.json").read_text())
    assert report["exit_code"] == run.returncode
    suite = report["suites"][0]
    assert suite["name"] == "feedback" and suite["n_samples"] == 10 and suite["n_errors"] == 0
    assert suite["metrics"]["correction_similarity"]["unscored"] == 5


def check_feedback_metric(gateway: GatewayProcess) -> None:
    metrics = gateway.metrics_text()
    assert 'gateway_feedback_total{rating="down"} 10.0' in metrics
    assert 'gateway_feedback_total{rating="up"} 1.0' in metrics


def test_feedback_becomes_a_dataset_a_gate_and_online_scores(
    redis_factory: Callable[..., Any],
    mock_upstream_factory: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    upstream = mock_upstream_factory()
    gateway = gateway_factory(
        redis_factory().url,
        GATEWAY_UPSTREAMS=upstreams_env(("mock", upstream.base_url, [MOCK_LLM])),
        GATEWAY_CAPTURE_SAMPLE_RATE="1.0",
        GATEWAY_EXCHANGE_READER_KEYS='["online-evals"]',
    )
    rated = rate_thirty_chats(gateway, MOCK_LLM)
    other = {"authorization": f"Bearer {gateway.create_key('someone-else')}"}
    refused = httpx.post(f"{gateway.base_url}/v1/feedback", headers=other,
                         json={"request_id": rated["down"][0], "rating": "up"})  # fmt: skip
    assert refused.status_code == 403
    check_feedback_metric(gateway)
    check_the_loop(gateway, tmp_path, MOCK_LLM, rated)

    online_key = gateway.create_key("online-evals")
    with otlp_receiver() as receiver:
        online = evals_cli(gateway, tmp_path, "online", "--once",
                           EVALS_API_KEY=online_key, EVALS_MODEL=MOCK_LLM,
                           OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                           OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")  # fmt: skip
        assert online.returncode == 0, online.stderr
        # Every captured exchange: the 30 chats and the 10 requests of `evals run`.
        assert receiver.metric("evals_online_samples", suite="feedback") == 40
        answered = receiver.metric("evals_online_score", suite="feedback", metric="answered")
        assert answered is not None and 0 <= answered <= 1
        similarity = receiver.metric(
            "evals_online_score", suite="feedback", metric="correction_similarity"
        )
        assert similarity is not None and 0 <= similarity <= 1
    # A plain key may not read the exchanges; the online job's key may.
    plain = httpx.get(f"{gateway.base_url}/admin/exchanges", headers=rated["headers"])
    assert plain.status_code == 403


@pytest.mark.e2e
def test_the_loop_on_smollm2(
    redis_factory: Callable[..., Any],
    llm_server: Any,
    gateway_factory: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    gateway = gateway_factory(
        redis_factory().url,
        GATEWAY_UPSTREAMS=upstreams_env(("llm", llm_server.base_url, [llm_server.model])),
        GATEWAY_CAPTURE_SAMPLE_RATE="1.0",
    )
    rated = rate_thirty_chats(gateway, llm_server.model, max_tokens=8)
    check_feedback_metric(gateway)
    check_the_loop(gateway, tmp_path, llm_server.model, rated)
