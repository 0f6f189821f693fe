"""Prometheus metrics served on `/metrics` (the names are a contract with the
dashboards: docs/gateway.md, "Observability", lists them).

Each app gets its own registry so several apps in one process (tests) never clash.
The OpenTelemetry GenAI client metrics are exported under their Prometheus names
(`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# `*_created` series double the scrape size and no dashboard uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests handled, by route, HTTP status and model.",
            ["route", "status", "model"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself, upstream excluded.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from request to the first streamed content chunk.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "gateway_cache_requests_total",
            "Cache lookups by kind (exact|semantic) and result (hit|miss|bypass).",
            ["kind", "result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_total",
            "Requests refused by a rate limit (requests|tokens).",
            ["limit"],
            registry=r,
        )
        self.rate_limit_skipped = Counter(
            "gateway_rate_limit_skipped_total",
            "Requests let through unchecked because Redis was unavailable (fail-open).",
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failed upstream attempts by upstream and reason.",
            ["upstream", "reason"],
            registry=r,
        )
        self.model_listings = Counter(
            "gateway_model_listings_total",
            "Reads of an upstream's /v1/models by upstream and result: ok, or why it failed "
            "(connection|timeout|status|too_large|invalid; the last good listing is kept).",
            ["upstream", "result"],
            registry=r,
        )
        self.listed_models = Gauge(
            "gateway_upstream_listed_models",
            "Models in an upstream's last good /v1/models listing.",
            ["upstream"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Requests being handled now.", registry=r
        )
        self.tokens = Counter(
            "gateway_tokens_total",
            "Tokens by model and direction (input|output), from upstream usage.",
            ["model", "direction"],
            registry=r,
        )
        self.spend = Counter(
            "gateway_spend_total",
            "Spend by model, in the currency of GATEWAY_MODEL_PRICES (0 for unpriced models).",
            ["model"],
            registry=r,
        )
        self.redis_up = Gauge(
            "gateway_redis_up", "1 when the last Redis call succeeded.", registry=r
        )
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "OpenTelemetry GenAI: tokens per operation.",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.genai_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "OpenTelemetry GenAI: duration of upstream operations.",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_up.set(1)
        self._children: dict[tuple[str, int, str], tuple[Any, Any, Any]] = {}

    def request_done(
        self, route: str, status: int, model: str, elapsed: float, upstream: float
    ) -> None:
        key = (route, status, model)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, str(status), model),
                self.duration.labels(route),
                self.overhead.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        children[2].observe(max(0.0, elapsed - upstream))

    def record_usage(
        self, operation: str, model: str, input_tokens: int, output_tokens: int
    ) -> None:
        if input_tokens:
            self.tokens.labels(model, "input").inc(input_tokens)
            self.genai_tokens.labels(operation, model, "input").observe(input_tokens)
        if output_tokens:
            self.tokens.labels(model, "output").inc(output_tokens)
            self.genai_tokens.labels(operation, model, "output").observe(output_tokens)
