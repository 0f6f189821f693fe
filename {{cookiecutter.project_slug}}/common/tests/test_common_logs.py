"""JSON log lines: one object per line, trace ids inside a span, secrets redacted."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from service_common.logs import REDACTED, JsonFormatter, configure_json_logging, redact


def line(logger: logging.Logger, message: str, *args: object, **extra: object) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return json.loads(stream.getvalue())


@pytest.fixture
def logger() -> logging.Logger:
    log = logging.getLogger("service_common.test")
    log.propagate = False
    return log


def test_a_line_has_time_level_logger_message_and_the_extra_fields(logger) -> None:
    entry = line(logger, "served %s", "chat", status=200, duration_ms=1.5)
    assert entry["level"] == "warning" and entry["logger"] == "service_common.test"
    assert entry["message"] == "served chat"
    assert (entry["status"], entry["duration_ms"]) == (200, 1.5)
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert "trace_id" not in entry


def test_inside_a_span_the_line_carries_its_trace_and_span_ids(logger) -> None:
    tracer = TracerProvider().get_tracer("test")  # a local provider: no global state
    with tracer.start_as_current_span("work") as span:
        entry = line(logger, "inside")
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")


@pytest.mark.parametrize(
    "text",
    [
        "upstream said: invalid key sk-gw-Zx8_abcdefghijklmnop",
        "headers {'authorization': 'Bearer abc.def-123'}",
        "connecting to redis://:hunter2-pass@redis:6379/0",
        "openai key sk-proj-0123456789abcdef rejected",
    ],
)
def test_key_like_text_in_a_message_is_redacted(logger, text) -> None:
    entry = line(logger, text)
    for secret in ("Zx8_abcdefghijklmnop", "abc.def-123", "hunter2-pass", "0123456789abcdef"):
        assert secret not in entry["message"]
    assert REDACTED in entry["message"] or "***@" in entry["message"]


def test_redaction_keeps_what_identifies_a_request() -> None:
    text = "key_id=key_3f2a request_id=req_01 redis://redis:6379/0 redis://:***@cache:6379"
    assert redact(text) == text


def test_extra_fields_named_for_secrets_are_redacted_whatever_they_hold(logger) -> None:
    entry = line(logger, "call", api_key="plain", authorization="x", key_id="key_1", tokens=3)
    assert entry["api_key"] == REDACTED and entry["authorization"] == REDACTED
    assert (entry["key_id"], entry["tokens"]) == ("key_1", 3)


def test_exceptions_are_formatted_and_redacted(logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad key sk-abcdefghijkl")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert "ValueError" in entry["exception"] and "sk-abcdefghijkl" not in entry["exception"]


def test_configure_routes_every_logger_through_one_json_handler(capsys) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_json_logging("info")
        logging.getLogger("uvicorn.error").info("started")
        logging.getLogger("httpx").info("a request line nobody needs")
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert [entry["message"] for entry in lines] == ["started"]
    assert lines[0]["logger"] == "uvicorn.error"
