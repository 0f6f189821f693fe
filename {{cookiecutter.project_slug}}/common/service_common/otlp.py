"""When and how to export over OTLP, read from the standard `OTEL_*` variables.

One rule for every service and signal: export is on when an endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, or the signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`)
and `OTEL_SDK_DISABLED` is not true. The protocol is the signal's
`OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc`, or
`http/protobuf` (the OpenTelemetry default). The exporters read the endpoint, headers
and timeout from the same variables themselves.

The exporters are imported only when asked for, so a service also runs in an image
without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

Signal = Literal["traces", "metrics"]


def sdk_disabled(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def export_requested(env: Mapping[str, str] = os.environ, signal: Signal = "traces") -> bool:
    """True when `signal` should be exported: an endpoint is set and the SDK is not off."""
    if sdk_disabled(env):
        return False
    own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(own))


def otlp_protocol(env: Mapping[str, str] = os.environ, signal: Signal = "traces") -> str:
    """The protocol the OpenTelemetry SDK would pick for `signal`: `grpc` or `http/protobuf`."""
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    return "grpc" if protocol.strip() == "grpc" else "http/protobuf"


def service_name(default: str, env: Mapping[str, str] = os.environ) -> str:
    """`OTEL_SERVICE_NAME`, else the service's own default (compose and `make dev` set it)."""
    return env.get("OTEL_SERVICE_NAME") or default


def span_exporter() -> SpanExporter:
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def metric_exporter() -> MetricExporter | None:
    """The OTLP metric exporter the variables ask for; None when metrics are not exported."""
    if not export_requested(signal="metrics"):
        return None
    if otlp_protocol(signal="metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()
