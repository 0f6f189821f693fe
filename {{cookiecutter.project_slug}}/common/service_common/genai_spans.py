"""The GenAI semantic-convention attributes every service's spans share.

A GenAI span is named `{gen_ai.operation.name} {gen_ai.request.model}`; these helpers
set the request, usage, response and error attributes the same way in the gateway's
client spans and the model service's server-side spans, so one Jaeger query reads both.
What only one service records (the gateway's captured content and ids, the model
service's vLLM latency names) stays in that service's `genai_spans` module.

No helper here records prompt or completion text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue


def start_genai_span(
    tracer: Tracer,
    operation: str,
    model: str,
    kind: SpanKind | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Span:
    """Start `{operation} {model}` (a child of the current span) with its two required
    attributes and any `attributes` given."""
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(f"{operation} {model}", kind=kind or SpanKind.INTERNAL)
    span.set_attribute("gen_ai.operation.name", operation)
    span.set_attribute("gen_ai.request.model", model)
    span.set_attributes(attributes or {})
    return span


def set_request_numbers(span: Span, fields: Iterable[tuple[str, object]]) -> None:
    """`gen_ai.request.<name>` for each field the client set to a number (booleans and
    absent fields are skipped: `seed: true` is not a seed)."""
    for name, value in fields:
        if isinstance(value, int | float) and not isinstance(value, bool):
            span.set_attribute(f"gen_ai.request.{name}", value)


def set_usage(span: Span, input_tokens: int | None, output_tokens: int | None = None) -> None:
    if input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    if output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def set_response(
    span: Span,
    model: str | None = None,
    response_id: str | None = None,
    finish_reasons: Sequence[str] = (),
) -> None:
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if response_id:
        span.set_attribute("gen_ai.response.id", response_id)
    if finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))


def set_error(span: Span, error_type: str, description: str | None = None) -> None:
    """A failed operation: low-cardinality `error.type` (an HTTP status, a class name)
    and the span's status ERROR, as the conventions ask."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, description or error_type)
