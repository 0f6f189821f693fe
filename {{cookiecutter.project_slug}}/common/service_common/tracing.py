"""The process's tracer provider, installed once when the `OTEL_*` variables ask for it
(see `service_common.otlp`). Off, no provider or exporter exists, no span is recorded
and requests pay nothing.

Sampling is the SDK's own, from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
(default: parent-based, always on); `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes.
The SDK and exporters are imported only here, when tracing is on: tracing asked for in an
image without them (or without a service's instrumentations, named in `requires`) logs a
warning and the service runs untraced instead of failing.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from service_common.otlp import export_requested, otlp_protocol, service_name, span_exporter

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)
_configured = False


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    return export_requested(env, "traces")


def configure_tracing(default_service_name: str, requires: Sequence[str] = ()) -> bool:
    """Install the global tracer provider once per process; True when tracing is on.

    `requires`: modules (a service's instrumentations) that must import, or tracing
    stays off with a warning."""
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

        exporter = span_exporter()
        for module in requires:
            importlib.import_module(module)
    except ImportError as error:
        log.warning("tracing asked for, but OpenTelemetry is not installed here (%s)", error)
        return False
    name = service_name(default_service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing on (OTLP %s, service %s)", otlp_protocol(), name)
    return True


def tracer(name: str) -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer(name)
