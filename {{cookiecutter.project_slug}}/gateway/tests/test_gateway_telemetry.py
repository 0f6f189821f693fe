"""Traces reach a real OTLP/HTTP receiver with GenAI attributes; JSON logs carry trace
ids; neither contains prompt text or keys (content capture is off by default)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import MOCK_EMBEDDER, MOCK_LLM, upstreams_env
from tests.support.otlp import OtlpReceiver, attributes_of
from tests.support.otlp import otlp_receiver as receiving

PROMPT = "zebra-secret-prompt-text"


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with receiving() as receiver:
        yield receiver


def test_traces_metrics_and_logs_without_content(
    gateway_factory, redis_server, mock_upstream, otlp_receiver
) -> None:
    gateway = gateway_factory(
        redis_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(
            ("mock", mock_upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])
        ),
        GATEWAY_ACCESS_LOG="true",
        OTEL_SDK_DISABLED="false",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="gateway-under-test",
    )
    key = gateway.create_key("telemetry")
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": MOCK_LLM,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 5,
            "temperature": 0,
        },
    )
    assert response.status_code == 200

    genai = otlp_receiver.wait_for(lambda s: s.name == f"chat {MOCK_LLM}", timeout=15)
    assert genai, [s.name for s in otlp_receiver.spans]
    attributes = attributes_of(genai[0])
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == MOCK_LLM
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.usage.input_tokens"] >= 1
    assert attributes["gen_ai.response.finish_reasons"] == ["length"]

    time.sleep(0.5)  # let the other spans of the request arrive
    trace_id = genai[0].trace_id
    same_trace = [s for s in otlp_receiver.spans if s.trace_id == trace_id]
    names = {s.name for s in same_trace}
    assert any(name.startswith("POST /v1/chat/completions") for name in names), names  # FastAPI
    assert any(name == "POST" or name.startswith("POST ") for name in names)  # httpx
    assert any("EVALSHA" in name or "HGETALL" in name for name in names), names  # Redis
    everything = str([attributes_of(s) for s in otlp_receiver.spans])
    assert PROMPT not in everything and key not in everything

    log_lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line]
    access = [line for line in log_lines if line.get("logger") == "gateway.access"]
    assert access and access[-1]["trace_id"] == trace_id.hex()
    assert access[-1]["key_id"].startswith("key_")
    raw_log = gateway.log_path.read_text()
    assert PROMPT not in raw_log and key not in raw_log and gateway.master_key not in raw_log
