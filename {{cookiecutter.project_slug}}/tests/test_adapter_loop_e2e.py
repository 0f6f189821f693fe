"""The improvement loop's last steps end to end (docs/adapters.md): an adapter the
finetune job trained in this session is served by the model service, found by the
gateway in the upstream's /v1/models (no gateway setting names it), answers through the
gateway where the base never does, and passes the evals gate against its base.

SmolLM2-135M-Instruct from MODELS_DIR; the adapter is the session's `codeword_adapter`
(tests/support/adapters.py), served by `codeword_server`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.adapters import CODEWORD, held_out_codeword_questions
from tests.support.gateway import GatewayFactory, GatewayProcess, upstreams_env
from tests.support.models import LLM_ID, ModelServer
from tests.support.processes import source_path
from tests.support.redis import RedisServer

pytestmark = pytest.mark.e2e

ADAPTER = "codeword"


@pytest.fixture
def gateway(
    codeword_server: ModelServer, gateway_factory: GatewayFactory, redis_server: RedisServer
) -> GatewayProcess:
    """A gateway configured with the base model only: the adapter comes from discovery."""
    gateway = gateway_factory(
        redis_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(("llm", codeword_server.base_url, [LLM_ID])),
        GATEWAY_MODELS_REFRESH_SECONDS="0.5",
    )
    gateway.wait_until(lambda: ADAPTER in model_cards(gateway), 60, "listing the adapter")
    return gateway


def model_cards(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    headers = {"authorization": f"Bearer {gateway.master_key}"}
    response = httpx.get(f"{gateway.base_url}/v1/models", headers=headers, timeout=30)
    response.raise_for_status()
    return {card["id"]: card for card in response.json()["data"]}


def codeword_answers(gateway: GatewayProcess, model: str) -> list[str]:
    headers = {"authorization": f"Bearer {gateway.master_key}"}
    answers = []
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=300) as client:
        for question in held_out_codeword_questions():
            body = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "temperature": 0,
                "max_tokens": 16,
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["model"] == model
            answers.append(str(response.json()["choices"][0]["message"]["content"]))
    return answers


def run_evals(gateway: GatewayProcess, tmp: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {
        **os.environ,
        "EVALS_BASE_URL": f"{gateway.base_url}/v1",
        "EVALS_API_KEY": gateway.master_key,
        "EVALS_REPORTS_DIR": str(tmp / "reports"),
        "EVALS_CACHE_DIR": str(tmp / "cache"),
        "PYTHONPATH": source_path("evals"),
    }
    argv = [sys.executable, "-m", "evals", "run", "--run-id", "loop", *args]
    done = subprocess.run(
        argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=900, check=False
    )
    report_path = tmp / "reports" / "loop" / "report.json"
    assert report_path.is_file(), done.stdout + done.stderr
    return done.returncode, json.loads(report_path.read_text()), done.stdout + done.stderr


def test_lora_adapter_found_by_discovery_answers_through_the_gateway(
    gateway: GatewayProcess,
) -> None:
    assert model_cards(gateway)[ADAPTER]["parent"] == LLM_ID
    base_answers = codeword_answers(gateway, LLM_ID)
    adapter_answers = codeword_answers(gateway, ADAPTER)
    assert len(base_answers) == len(adapter_answers) == 10
    assert sum(CODEWORD in a.upper() for a in base_answers) == 0, base_answers
    assert sum(CODEWORD in a.upper() for a in adapter_answers) >= 9, adapter_answers


def test_lora_adapter_passes_the_evals_gate_against_its_base(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    code, report, output = run_evals(
        gateway, tmp_path, "--suite", "codeword", "--model", ADAPTER,
        "--compare-to", LLM_ID, "--better-on", "codeword",
    )  # fmt: skip
    assert code == 0, output
    gain = next(d for d in report["comparison"]["differences"] if d["suite"] == "codeword")
    assert gain["candidate"] > gain["base"] and gain["verdict"] == "better", gain
    assert any(c["kind"] == "superiority" and c["passed"] for c in report["gate"]["checks"])


def test_lora_adapter_report_on_an_unrelated_suite_shows_both_models(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    # No gate asked: the refusal suite's own threshold may pass or fail for either model.
    code, report, output = run_evals(
        gateway, tmp_path, "--suite", "refusal", "--model", ADAPTER, "--compare-to", LLM_ID
    )
    assert code in (0, 1), output
    assert report["model"] == ADAPTER and report["comparison"]["base_model"] == LLM_ID
    assert {s["name"] for s in report["comparison"]["base_suites"]} == {"refusal"}
    assert {d["suite"] for d in report["comparison"]["differences"]} == {"refusal"}
