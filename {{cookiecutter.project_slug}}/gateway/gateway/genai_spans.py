"""OpenTelemetry GenAI spans for upstream calls (semantic conventions `gen_ai.*`).
Prompt and completion text are recorded only with `GATEWAY_CAPTURE_CONTENT=true`."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind

from gateway.tracing import tracer

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
    span = tracer().start_span(f"{operation} {model}", kind=SpanKind.CLIENT)
    span.set_attribute("gen_ai.operation.name", operation)
    span.set_attribute("gen_ai.provider.name", "openai")
    span.set_attribute("gen_ai.request.model", model)
    for name in REQUEST_ATTRIBUTES:
        value = payload.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            span.set_attribute(f"gen_ai.request.{name}", value)
    for name, value in ids.items():
        span.set_attribute(name, value)
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
        span.set_attribute("error.type", error_type)
    if body:
        span.set_attribute("gen_ai.usage.input_tokens", usage[0])
        span.set_attribute("gen_ai.usage.output_tokens", usage[1])
        if body.get("model"):
            span.set_attribute("gen_ai.response.model", body["model"])
        if body.get("id"):
            span.set_attribute("gen_ai.response.id", body["id"])
        reasons = [
            c.get("finish_reason") for c in body.get("choices") or () if c.get("finish_reason")
        ]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
    if output_text is not None:
        span.set_attribute("gen_ai.output.messages", orjson.dumps([output_text]).decode())
    span.end()
