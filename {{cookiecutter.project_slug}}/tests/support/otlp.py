"""A minimal OTLP/HTTP trace and metrics receiver on a real socket, for tests of exports.

Point a service at it with `OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint` and
`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (`OTEL_BSP_SCHEDULE_DELAY=100` makes the batch
processor export within a tenth of a second). Spans are decoded with opentelemetry-proto.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.processes import free_port


class OtlpReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        # service.name of the resource that sent each span, by span id.
        self.services: dict[bytes, str] = {}
        # (metric name, data point attributes) -> the latest value received.
        self.metrics: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/traces":
                    receiver._store(body)
                elif self.path == "/v1/metrics":
                    receiver._store_metrics(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _store(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = attributes_of(resource_spans.resource)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(span)
                        self.services[span.span_id] = str(resource.get("service.name", ""))

    def _store_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            labels = frozenset(attributes_of(point).items())
                            value = point.as_double if point.HasField("as_double") else point.as_int
                            self.metrics[(metric.name, labels)] = float(value)

    def metric(self, name: str, **labels: Any) -> float | None:
        with self._lock:
            return self.metrics.get((name, frozenset(labels.items())))

    def wait_for(self, match: Callable[[Span], bool], timeout: float = 60.0) -> list[Span]:
        """The spans received so far that match, waiting until there is at least one."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [span for span in self.spans if match(span)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(item: Any) -> dict[str, Any]:
    """A span's, event's or resource's attributes as a plain dict."""
    return {attribute.key: value_of(attribute.value) for attribute in item.attributes}


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
