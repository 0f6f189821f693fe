"""OpenTelemetry tracing of the transformers backend, configured from the `OTEL_*` variables.

The same rule as the gateway's: tracing is on when an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and
`OTEL_SDK_DISABLED` is not true. Off, no tracer provider or exporter is installed, no
span is created and requests pay nothing (FastAPI's own telemetry stays off too: it runs
only once a provider is installed, and defers to the instrumentation used here). The
protocol comes from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`
(`grpc`, or `http/protobuf`, the OpenTelemetry default), the service name from
`OTEL_SERVICE_NAME` (`llm` / `embedder` in compose and `make dev`).

The SDK, exporters and instrumentation are imported only when tracing is on, so the
launcher also runs in an image without them (the GPU image adds only what vLLM lacks);
there, tracing asked for but not installed logs a warning and the service runs untraced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)
# Probes and scrapes would drown the request spans.
UNTRACED_ROUTES = "/health,/metrics"
_configured = False


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def otlp_protocol(env: Mapping[str, str] = os.environ) -> str:
    """The traces protocol the OpenTelemetry SDK would pick: `grpc` or `http/protobuf`."""
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    return "grpc" if protocol.strip() == "grpc" else "http/protobuf"


def configure_tracing(default_service_name: str = "model-service") -> bool:
    """Install the global tracer provider once per process; True when tracing is on."""
    global _configured
    if not tracing_requested():
        return False
    if _configured:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if otlp_protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        import opentelemetry.instrumentation.fastapi  # noqa: F401  (checked before we commit)
    except ImportError as error:
        log.warning("tracing asked for, but OpenTelemetry is not installed here (%s)", error)
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing on (OTLP %s, service %s)", otlp_protocol(), name)
    return True


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
    from opentelemetry import trace

    return trace.get_tracer("model_service")
