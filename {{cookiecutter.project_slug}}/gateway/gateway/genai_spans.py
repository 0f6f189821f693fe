"""OpenTelemetry GenAI spans for upstream calls (semantic conventions `gen_ai.*`).
Prompt and completion text are recorded only with `GATEWAY_CAPTURE_CONTENT=true`."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind

from gateway.exchange import Exchange, RouteSpec, usage_tokens
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
    exchange: Exchange,
    spec: RouteSpec,
    payload: dict[str, Any],
    model: str,
    texts: list[str],
) -> Span | None:
    if not exchange.state.tracing:
        return None
    span = tracer().start_span(f"{spec.operation} {model}", kind=SpanKind.CLIENT)
    span.set_attribute("gen_ai.operation.name", spec.operation)
    span.set_attribute("gen_ai.provider.name", "openai")
    span.set_attribute("gen_ai.request.model", model)
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "frequency_penalty",
        "presence_penalty",
    ):
        value = payload.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            span.set_attribute(f"gen_ai.request.{name}", value)
    span.set_attribute("gateway.request_id", exchange.request_id)
    span.set_attribute("gateway.key_id", exchange.key.id)
    if exchange.state.settings.capture_content:
        span.set_attribute("gen_ai.input.messages", orjson.dumps(texts).decode())
    return span


def end_span(
    exchange: Exchange, span: Span | None, body: dict[str, Any] | None, output_text: str | None
) -> None:
    if span is None:
        return
    if body:
        input_tokens, output_tokens = usage_tokens(body.get("usage"))
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if body.get("model"):
            span.set_attribute("gen_ai.response.model", body["model"])
        if body.get("id"):
            span.set_attribute("gen_ai.response.id", body["id"])
        reasons = [
            c.get("finish_reason") for c in body.get("choices") or () if c.get("finish_reason")
        ]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
    if output_text is not None and exchange.state.settings.capture_content:
        span.set_attribute("gen_ai.output.messages", orjson.dumps([output_text]).decode())
    span.end()


def first_text(body: dict[str, Any]) -> str | None:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else None
    text = choices[0].get("text")
    return text if isinstance(text, str) else None
