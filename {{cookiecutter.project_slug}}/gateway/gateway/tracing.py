"""OpenTelemetry tracing, configured from the standard `OTEL_*` variables.

Tracing is on when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not true. Off, the
gateway creates no spans at all (no per-request cost).
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.trace import Tracer

log = logging.getLogger("gateway.tracing")
_configured = False


def tracing_requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing() -> bool:
    """Install the global tracer provider once per process; True when tracing is on."""
    global _configured
    if not tracing_requested():
        return False
    if _configured:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "gateway")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()
    _configured = True
    log.info("tracing on (OTLP %s)", protocol or "http/protobuf")
    return True


def tracer() -> Tracer:
    return trace.get_tracer("gateway")
