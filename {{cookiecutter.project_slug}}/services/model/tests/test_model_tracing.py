"""Traces of the transformers backend: real `python -m model_service serve` processes on
the tiny test model, exporting over OTLP/HTTP to a real receiver on a socket.

A request carrying the caller's `traceparent` (as the gateway's httpx instrumentation
sends it) gets a server span under that parent and a GenAI span under the server span,
with the model, token counts, finish reason and vLLM's latency names; no prompt or
completion text, no header value.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from model_service.genai_spans import LATENCY_ATTRIBUTES
from tests.support.models import ModelServer
from tests.support.otlp import OtlpReceiver, attributes_of, otlp_receiver

PROMPT = "zebra-secret-prompt-text"
SECRET_HEADER = "Bearer sk-never-in-a-trace"
LONG_CONTEXT = 4096  # room for a generation that outlasts a client's patience
TINY = {
    "MODEL_SERVED_NAME": "tiny",
    "MODEL_MAX_MODEL_LEN": str(LONG_CONTEXT),
    # One slot and no queue: a held stream makes the next request a 503 (an error span).
    "MODEL_MAX_NUM_SEQS": "1",
    "MODEL_MAX_QUEUE": "0",
    "MODEL_KV_CACHE_GIB": "0.01",
    "MODEL_NUM_THREADS": "1",
}


class Caller:
    """A trace the test starts, as an upstream service would: its ids and header."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_bytes(16)
        self.span_id = secrets.token_bytes(8)
        self.traceparent = f"00-{self.trace_id.hex()}-{self.span_id.hex()}-01"

    def headers(self) -> dict[str, str]:
        return {"traceparent": self.traceparent, "authorization": SECRET_HEADER}

    def spans(self, receiver: OtlpReceiver, name: str, timeout: float = 60.0) -> list[Span]:
        """This trace's spans, once the one named `name` and the service's server span
        have both arrived. The server span ends after the GenAI span (when the response
        has been sent), so under load the batch exporter can send it in a later batch:
        waiting for `name` alone let a test read the trace before it was complete."""
        mine = self.trace_id
        receiver.wait_for(lambda s: s.trace_id == mine and s.name == name, timeout)
        receiver.wait_for(lambda s: s.trace_id == mine and s.kind == Span.SPAN_KIND_SERVER, timeout)
        return receiver.wait_for(lambda s: s.trace_id == mine, 0)


@pytest.fixture(scope="module")
def long_context_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a long context (RoPE has no position table to grow)."""
    path = tmp_path_factory.mktemp("tiny-long") / "tiny"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = LONG_CONTEXT
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as started:
        yield started


@pytest.fixture(scope="module")
def servers(
    long_context_model: Path, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelServer]]:
    """An LLM and an embedder (the tiny model under mean pooling), started side by side."""
    otel = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    logs = tmp_path_factory.mktemp("traced")
    source, models = str(long_context_model), long_context_model.parent
    llm_env = {**TINY, **otel, "OTEL_SERVICE_NAME": "llm-under-test"}
    embed_env = {"MODEL_SERVED_NAME": "tiny-embed", "MODEL_MAX_MODEL_LEN": "128", **otel}
    started = {
        "llm": ModelServer("traced-llm", logs, models, source, env=llm_env),
        "embedder": ModelServer("traced-embedder", logs, models, source, "embed", env=embed_env),
    }
    try:
        with ThreadPoolExecutor(len(started)) as pool:
            for future in [pool.submit(server.start) for server in started.values()]:
                future.result()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def traced(servers: dict[str, ModelServer]) -> ModelServer:
    return servers["llm"]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], **fields}


def by_name(spans: list[Span], name: str) -> Span:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, [span.name for span in spans]
    return matching[0]


def server_span(spans: list[Span], route: str) -> Span:
    matching = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER and route in s.name]
    assert len(matching) == 1, [span.name for span in spans]
    return matching[0]


def assert_nothing_sensitive(receiver: OtlpReceiver) -> None:
    everything = str(
        [(attributes_of(s), [attributes_of(e) for e in s.events]) for s in receiver.spans]
    )
    assert PROMPT not in everything
    assert SECRET_HEADER not in everything and "sk-never" not in everything


def test_chat_continues_the_callers_trace_with_genai_attributes(
    traced: ModelServer, receiver: OtlpReceiver
) -> None:
    caller = Caller()
    response = httpx.post(
        f"{traced.base_url}/v1/chat/completions",
        headers=caller.headers(),
        json=chat(max_tokens=5, temperature=0, top_p=0.9, ignore_eos=True),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()

    spans = caller.spans(receiver, "chat tiny")
    server = server_span(spans, "POST /v1/chat/completions")
    assert server.parent_span_id == caller.span_id  # the caller's span is the parent
    genai = by_name(spans, "chat tiny")
    assert genai.parent_span_id == server.span_id
    assert receiver.services[genai.span_id] == "llm-under-test"

    attributes = attributes_of(genai)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "tiny"
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.request.temperature"] == 0
    assert attributes["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert attributes["gen_ai.response.id"] == body["id"]
    assert attributes["gen_ai.request.stream"] is False
    # vLLM's names for the timings; each part no longer than the whole request.
    e2e = attributes["gen_ai.latency.e2e"]
    for name in LATENCY_ATTRIBUTES:
        assert 0 <= attributes[name] <= e2e, name
    assert [event.name for event in genai.events] == [
        "gen_ai.request.scheduled",
        "gen_ai.first_token",
    ]
    assert genai.start_time_unix_nano <= genai.events[0].time_unix_nano <= genai.end_time_unix_nano
    assert genai.status.code != Status.STATUS_CODE_ERROR
    assert_nothing_sensitive(receiver)


def test_stream_span_ends_with_the_stream_and_counts_its_tokens(
    traced: ModelServer, receiver: OtlpReceiver
) -> None:
    caller = Caller()
    request = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": 7,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{traced.base_url}/v1/completions",
        headers=caller.headers(),
        json=request,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]

    spans = caller.spans(receiver, "text_completion tiny")
    genai = by_name(spans, "text_completion tiny")
    assert genai.parent_span_id == server_span(spans, "POST /v1/completions").span_id
    attributes = attributes_of(genai)
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 7
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert attributes["gen_ai.latency.time_to_first_token"] <= attributes["gen_ai.latency.e2e"]
    assert "model_service.client_disconnected" not in attributes
    assert_nothing_sensitive(receiver)


def test_disconnect_and_full_queue_end_their_spans(
    traced: ModelServer, receiver: OtlpReceiver
) -> None:
    holder, refused = Caller(), Caller()
    request = chat(max_tokens=LONG_CONTEXT - 64, ignore_eos=True, stream=True)
    with (
        httpx.Client(base_url=traced.base_url, timeout=60) as client,
        client.stream(
            "POST", "/v1/chat/completions", headers=holder.headers(), json=request
        ) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # generation runs
        # The only slot is taken: the next request is refused, its span an error.
        busy = client.post(
            "/v1/chat/completions", headers=refused.headers(), json=chat(max_tokens=2)
        )
        assert busy.status_code == 503, busy.text
        # Leaving the `with` closes the connection mid-stream.

    error = by_name(refused.spans(receiver, "chat tiny"), "chat tiny")
    assert error.status.code == Status.STATUS_CODE_ERROR
    assert attributes_of(error)["error.type"] == "QueueFull"

    cut = by_name(holder.spans(receiver, "chat tiny"), "chat tiny")
    attributes = attributes_of(cut)
    assert attributes["model_service.client_disconnected"] is True
    assert 1 <= attributes["gen_ai.usage.output_tokens"] < LONG_CONTEXT - 64
    assert "gen_ai.response.finish_reasons" not in attributes
    assert "client disconnected" in [event.name for event in cut.events]
    assert cut.status.code != Status.STATUS_CODE_ERROR
    assert_nothing_sensitive(receiver)


def running_requests(server: ModelServer) -> float:
    metrics = httpx.get(server.base_url + "/metrics").text
    line = next(
        line for line in metrics.splitlines() if line.startswith("vllm:num_requests_running{")
    )
    return float(line.rsplit(" ", 1)[1])


def test_non_streamed_call_cut_by_its_client_ends_its_span(
    traced: ModelServer, receiver: OtlpReceiver
) -> None:
    caller = Caller()
    body = json.dumps(chat(max_tokens=LONG_CONTEXT - 64, ignore_eos=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"traceparent: {caller.traceparent}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", traced.port)) as client:
        client.sendall(head + body)
        traced.wait_until(lambda: running_requests(traced) >= 1, 60, "generating")
    # The socket is closed while the answer is being generated.

    cut = by_name(caller.spans(receiver, "chat tiny"), "chat tiny")
    attributes = attributes_of(cut)
    assert attributes["model_service.client_disconnected"] is True
    assert attributes["gen_ai.usage.output_tokens"] < LONG_CONTEXT - 64
    assert cut.status.code != Status.STATUS_CODE_ERROR
    # The handler stops quietly (it used to fail closing the generator, then on 499).
    assert "Traceback" not in traced.log_path.read_text()


def test_embeddings_span_counts_the_input_tokens(
    servers: dict[str, ModelServer], receiver: OtlpReceiver
) -> None:
    embedder, caller = servers["embedder"], Caller()
    response = httpx.post(
        f"{embedder.base_url}/v1/embeddings",
        headers=caller.headers(),
        json={"model": "tiny-embed", "input": [PROMPT, "second input"]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()

    spans = caller.spans(receiver, "embeddings tiny-embed")
    genai = by_name(spans, "embeddings tiny-embed")
    server = server_span(spans, "POST /v1/embeddings")
    assert server.parent_span_id == caller.span_id
    assert genai.parent_span_id == server.span_id
    attributes = attributes_of(genai)
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.request.model"] == "tiny-embed"
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.embeddings.dimension.count"] == len(body["data"][0]["embedding"])
    assert attributes["gen_ai.request.encoding_formats"] == ["float"]
    assert_nothing_sensitive(receiver)


def test_health_and_metrics_are_not_traced(traced: ModelServer, receiver: OtlpReceiver) -> None:
    caller = Caller()
    for path in ("/health", "/metrics"):
        assert httpx.get(traced.base_url + path, headers=caller.headers()).status_code == 200
    httpx.get(traced.base_url + "/v1/models", headers=caller.headers())
    spans = caller.spans(receiver, "GET /v1/models")
    assert [span.name for span in spans] == ["GET /v1/models"]


def test_without_an_endpoint_no_exporter_is_created(tiny_settings, monkeypatch) -> None:
    """Tracing off (the default): the app creates no provider and no span."""
    from opentelemetry import trace

    from model_service import tracing
    from model_service.app import create_app

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    before = trace.get_tracer_provider()
    app = create_app(tiny_settings())
    assert app.state.runtime.tracing is False
    assert trace.get_tracer_provider() is before
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.tracing_requested() is False
    assert create_app(tiny_settings()).state.runtime.tracing is False
    assert trace.get_tracer_provider() is before


def test_tracing_asked_for_where_opentelemetry_is_missing_runs_untraced(
    monkeypatch, caplog
) -> None:
    """The GPU image (vLLM's, plus our launcher) may lack the instrumentation: the
    transformers fallback then serves untraced and says why, instead of failing."""
    from opentelemetry import trace

    from model_service import tracing

    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.fastapi", None)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    before = trace.get_tracer_provider()
    with caplog.at_level(logging.WARNING, logger="model_service.tracing"):
        assert tracing.configure_tracing() is False
    assert "OpenTelemetry is not installed" in caplog.text
    assert trace.get_tracer_provider() is before
