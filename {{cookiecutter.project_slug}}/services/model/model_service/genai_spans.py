"""One OpenTelemetry GenAI span per chat, completion or embedding call.

Attributes follow the GenAI semantic conventions (`gen_ai.operation.name`,
`gen_ai.request.*`, `gen_ai.usage.*`, `gen_ai.response.*`); the timings use the names
vLLM's own `llm_request` span uses (`gen_ai.latency.time_in_queue`,
`gen_ai.latency.time_to_first_token`, ...), so both backends read the same in Jaeger.
Two span events mark when the request left the queue and when its first token came.

Prompt and completion text are never recorded, nor any request header. With tracing off
every function here gets `None` and returns at once. The attributes both services set
come from `service_common.genai_spans`; the vLLM latency names and events are this
service's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from model_service.errors import APIError
from model_service.generation import RequestStats
from model_service.tracing import tracer
from service_common.genai_spans import (
    set_error,
    set_request_numbers,
    set_response,
    set_usage,
    start_genai_span,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from opentelemetry.util.types import AttributeValue

    from model_service.protocol import SamplingFields

# Request fields recorded as `gen_ai.request.<name>` when the client set them.
REQUEST_FIELDS = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty")
# vLLM's names (vllm/tracing/utils.py, SpanAttributes), seconds.
E2E = "gen_ai.latency.e2e"
QUEUE = "gen_ai.latency.time_in_queue"
FIRST_TOKEN = "gen_ai.latency.time_to_first_token"
PREFILL = "gen_ai.latency.time_in_model_prefill"
DECODE = "gen_ai.latency.time_in_model_decode"
INFERENCE = "gen_ai.latency.time_in_model_inference"
LATENCY_ATTRIBUTES = (E2E, QUEUE, FIRST_TOKEN, PREFILL, DECODE, INFERENCE)
DISCONNECTED = "model_service.client_disconnected"


def start(
    tracing: bool,
    operation: str,
    model: str,
    response_id: str,
    body: SamplingFields | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Span | None:
    """Start the span (a child of the current server span) named `{operation} {model}`."""
    if not tracing:
        return None
    span = start_genai_span(tracer(), operation, model, attributes=attributes)
    set_response(span, model, response_id)
    if body is not None:
        set_request_numbers(span, [("max_tokens", body.requested_max_tokens)])
        set_request_numbers(span, ((name, getattr(body, name)) for name in REQUEST_FIELDS))
        span.set_attribute("gen_ai.request.stream", body.stream)
    return span


def end_generation(
    span: Span | None,
    stats: RequestStats,
    error: BaseException | None = None,
    disconnected: bool = False,
) -> None:
    """Record usage, finish reason and timings, then end the span."""
    if span is None:
        return
    set_usage(span, stats.prompt_tokens, stats.generation_tokens)
    set_response(span, finish_reasons=[stats.finish_reason] if stats.finish_reason else [])
    ended = time.perf_counter()
    latency: dict[str, Any] = {E2E: ended - stats.arrived}
    if stats.queue_seconds is not None:
        latency[QUEUE] = stats.queue_seconds
    if stats.first_token is not None:
        latency[FIRST_TOKEN] = stats.first_token - stats.arrived
    if stats.scheduled is not None and stats.first_token is not None:
        latency[PREFILL] = stats.first_token - stats.scheduled
    if stats.first_token is not None and stats.last_token is not None:
        latency[DECODE] = stats.last_token - stats.first_token
    if stats.scheduled is not None and stats.last_token is not None:
        latency[INFERENCE] = stats.last_token - stats.scheduled
    span.set_attributes(latency)
    if stats.scheduled is not None:
        span.add_event("gen_ai.request.scheduled", timestamp=_wall_ns(stats.scheduled, ended))
    if stats.first_token is not None:
        span.add_event("gen_ai.first_token", timestamp=_wall_ns(stats.first_token, ended))
    _finish(span, error, disconnected)


def end_embedding(
    span: Span | None,
    input_tokens: int | None,
    dimensions: int | None,
    error: BaseException | None = None,
) -> None:
    if span is None:
        return
    set_usage(span, input_tokens)
    if dimensions is not None:
        span.set_attribute("gen_ai.embeddings.dimension.count", dimensions)
    _finish(span, error, disconnected=False)


def _finish(span: Span, error: BaseException | None, disconnected: bool) -> None:
    if disconnected:
        # The client went away: not a server error, but the reason the output is short.
        span.set_attribute(DISCONNECTED, True)
        span.add_event("client disconnected")
    elif error is not None:
        set_error(span, error_type(error), type(error).__name__)
    span.end()


def error_type(error: BaseException) -> str:
    """Low-cardinality `error.type`: the HTTP status of an API error, else the class."""
    return str(error.status) if isinstance(error, APIError) else type(error).__qualname__


def _wall_ns(moment: float, now_perf: float) -> int:
    """A `time.perf_counter()` moment as wall-clock nanoseconds (span event timestamps)."""
    return time.time_ns() - int((now_perf - moment) * 1e9)
