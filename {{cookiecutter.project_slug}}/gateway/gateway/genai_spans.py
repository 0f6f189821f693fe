"""The gateway's GenAI client span per upstream call: the shared attributes
(`service_common.genai_spans`) plus what only the gateway records, the request ids and,
with `GATEWAY_CAPTURE_CONTENT=true`, the prompt and completion text."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind

from gateway.tracing import tracer
from service_common.genai_spans import (
    set_error,
    set_request_numbers,
    set_response,
    set_usage,
    start_genai_span,
)

REQUEST_ATTRIBUTES = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
)


def start_span(
    operation: str,
    model: str,
    payload: dict[str, Any],
    ids: dict[str, str],
    texts: list[str] | None,
) -> Span:
    """A client span for one upstream operation; `texts` only when content is captured."""
    span = start_genai_span(
        tracer(), operation, model, SpanKind.CLIENT, {"gen_ai.provider.name": "openai", **ids}
    )
    set_request_numbers(span, ((name, payload.get(name)) for name in REQUEST_ATTRIBUTES))
    if texts is not None:
        span.set_attribute("gen_ai.input.messages", orjson.dumps(texts).decode())
    return span


def end_span(
    span: Span,
    body: dict[str, Any] | None,
    usage: tuple[int, int],
    output_text: str | None,
    error_type: str | None,
) -> None:
    """Record the answer (usage, ids, finish reasons, text when captured) and end."""
    if error_type is not None:
        set_error(span, error_type)
    if body:
        set_usage(span, *usage)
        reasons = [
            c.get("finish_reason") for c in body.get("choices") or () if c.get("finish_reason")
        ]
        set_response(span, body.get("model"), body.get("id"), reasons)
    if output_text is not None:
        span.set_attribute("gen_ai.output.messages", orjson.dumps([output_text]).decode())
    span.end()
