"""The gateway's tracing: the shared `OTEL_*` rules (`service_common.tracing`) plus the
Redis instrumentation. Off, the gateway creates no spans at all (no per-request cost);
the FastAPI and httpx instrumentation is applied where the app and clients are built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service_common import tracing as shared
from service_common.tracing import tracing_requested

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["configure_tracing", "tracer", "tracing_requested"]
INSTRUMENTATIONS = (
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.httpx",
    "opentelemetry.instrumentation.redis",
)


def configure_tracing() -> bool:
    """Install the tracer provider and trace Redis commands; True when tracing is on."""
    if not shared.configure_tracing("gateway", requires=INSTRUMENTATIONS):
        return False
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


def tracer() -> Tracer:
    return shared.tracer("gateway")
