"""OpenTelemetry tracing of the transformers backend: the shared `OTEL_*` rules
(`service_common.tracing`: on when an OTLP endpoint is set and `OTEL_SDK_DISABLED` is
not true; protocol and sampling from the standard variables) plus the FastAPI server
spans. The service name comes from `OTEL_SERVICE_NAME` (`llm` / `embedder` in compose
and `make dev`). Off, no provider is installed and requests pay nothing (FastAPI's own
telemetry stays off too: it runs only once a provider is installed, and defers to the
instrumentation used here).

The launcher also runs in an image without the SDK or the instrumentation (the GPU
image adds only what vLLM lacks): there, tracing asked for logs a warning and the
transformers fallback runs untraced. vLLM traces itself (`vllm_server` passes it the
same endpoint and protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service_common import tracing as shared
from service_common.otlp import otlp_protocol
from service_common.tracing import tracing_requested

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import Tracer

__all__ = ["configure_tracing", "instrument", "otlp_protocol", "tracer", "tracing_requested"]
# Probes and scrapes would drown the request spans.
UNTRACED_ROUTES = "/health,/metrics"


def configure_tracing(default_service_name: str = "model-service") -> bool:
    """Install the global tracer provider once per process; True when tracing is on."""
    return shared.configure_tracing(
        default_service_name, requires=("opentelemetry.instrumentation.fastapi",)
    )


def instrument(app: FastAPI) -> None:
    """Server spans for the API routes, children of the caller's `traceparent`."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=UNTRACED_ROUTES,
        # One span per SSE chunk would cost more than the token it carries.
        exclude_spans=["receive", "send"],
    )


def tracer() -> Tracer:
    return shared.tracer("model_service")
