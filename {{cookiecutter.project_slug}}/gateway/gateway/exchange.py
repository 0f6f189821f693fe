"""One request's bookkeeping through the pipeline, and the one place it ends.

An `Exchange` is opened when the pipeline takes a request (the in-flight gauge goes
up) and closed exactly once by `close(status, outcome)`: it settles the token
reservation, records usage, ends the GenAI span, fills the caches with a complete
answer, writes the request metrics and the access log line, and lowers the in-flight
gauge; last, it hands the exchange record (and a sampled capture) to the exchange log,
appended in the background (exchange_log.py). The pipeline calls it from one `finally`
for JSON answers; the stream relay from one `finally` for streams.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span

from gateway.cache import ExactCache
from gateway.exchange_log import Capture, ExchangeLog
from gateway.genai_spans import end_span
from gateway.keys import KeyRecord
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import LimitDecision, RateLimiter, UsageEntry
from gateway.redis_store import RedisUnavailable
from gateway.route_adapters import RouteAdapter
from gateway.semantic_cache import SemanticCache
from gateway.spend import Prices, from_nano, hour_of, usage_hour_key

access_log = logging.getLogger("gateway.access")
Background = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True)
class SemanticEntry:
    """Where a semantic-cache miss will be stored: scope, prompt and its vector."""

    scope: str
    prompt: str
    vector: list[float] | None = None


@dataclass(frozen=True)
class CachePlan:
    """How one request uses the caches: the exact key (None: bypassed) and, for the
    semantic cache, the entry to look up and later fill (None: not used)."""

    exact_key: str | None = None
    semantic: SemanticEntry | None = None


@dataclass
class Outcome:
    """What an answer amounted to, for `Exchange.close`."""

    usage: tuple[int, int] = (0, 0)  # input, output tokens
    upstream_seconds: float | None = None  # set when an upstream answered
    body: dict[str, Any] | None = None  # the answer, for the span
    output_text: str | None = None
    cache_body: bytes | None = None  # a complete answer the caches may keep
    error_type: str | None = None
    charged: int | None = None  # tokens to settle at, when not the usage (an early end)


@dataclass(frozen=True)
class Books:
    """What closing an exchange writes to: built once with the pipeline."""

    metrics: GatewayMetrics
    limiter: RateLimiter
    cache: ExactCache
    semantic: SemanticCache
    background: Background
    access_log: bool = False
    capture_content: bool = False
    prices: Prices = field(default_factory=lambda: Prices({}))
    usage_ttl_seconds: int = 35 * 86400
    exchange_log: ExchangeLog | None = None


@dataclass
class Exchange:
    """What the pipeline knows about one request while handling it."""

    books: Books
    route: RouteAdapter
    key: KeyRecord
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = "unknown"
    upstream_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    limit: LimitDecision | None = None
    plan: CachePlan = field(default_factory=CachePlan)
    span: Span | None = None
    prompt_estimate: int = 0  # the prompt's tokens as admitted (for an answer without usage)
    closed: bool = False
    client_request_id: str | None = None  # the caller's own x-request-id, echoed back
    sampled: bool = False  # content is captured (GATEWAY_CAPTURE_SAMPLE_RATE)
    captured_input: Any = None  # the input as sent upstream (after redaction)

    def __post_init__(self) -> None:
        self.books.metrics.in_flight.inc()

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)

    def response_headers(self) -> dict[str, str]:
        headers = {
            **self.headers,
            "x-request-id": self.request_id,
            "x-gateway-overhead-ms": f"{self.overhead_ms():.3f}",
        }
        if self.client_request_id is not None:
            headers["x-client-request-id"] = self.client_request_id
        return headers

    async def close(self, status: int, outcome: Outcome | None = None) -> None:
        """End the request: settle, usage, span, caches, metrics, log (once)."""
        if self.closed:
            return
        self.closed = True
        outcome = outcome or Outcome()
        try:
            self._settle(outcome)
            self._record_usage(outcome)
            if self.span is not None:
                self._end_span(outcome)
            if status == 200 and outcome.cache_body is not None:
                await self._fill_caches(outcome.cache_body)
        finally:
            self._record_request(status)
            self._log_exchange(status, outcome)

    def _settle(self, outcome: Outcome) -> None:
        """Replace the token and cost reservation with the real usage and count the
        usage per hour, off the request path (until it lands, the larger reservation
        counts: limits and budgets err on the safe side)."""
        actual = outcome.charged if outcome.charged is not None else sum(outcome.usage)
        limit = self.limit if self.limit is not None and self.limit.allowed else None
        usage = self._usage_entry(outcome)
        if usage is None and (limit is None or (actual, 0) == (limit.reserved, limit.cost)):
            return
        self.books.background(self._settle_in_redis(limit, actual, usage))

    def _usage_entry(self, outcome: Outcome) -> UsageEntry | None:
        """The hourly usage line of an answer an upstream gave (None: none did)."""
        if outcome.upstream_seconds is None:
            return None
        input_tokens, output_tokens = outcome.usage
        if outcome.charged is not None:  # ended early: the prompt as admitted
            input_tokens = self.prompt_estimate
        cost = self.books.prices.cost(self.model, input_tokens, output_tokens)
        if cost:
            self.books.metrics.spend.labels(self.model).inc(from_nano(cost))
        key = self.key
        line = orjson.dumps([key.id, key.name, key.team or "", self.model]).decode()
        hour = usage_hour_key(hour_of(time.time()))
        ttl = self.books.usage_ttl_seconds
        return UsageEntry(hour, line, input_tokens, output_tokens, cost, ttl)

    async def _settle_in_redis(
        self, limit: LimitDecision | None, actual_tokens: int, usage: UsageEntry | None
    ) -> None:
        # If Redis is down the reservation stands; it expires with its window.
        with contextlib.suppress(RedisUnavailable):
            await self.books.limiter.settle(self.key, limit, actual_tokens, usage)

    def _record_usage(self, outcome: Outcome) -> None:
        if outcome.upstream_seconds is None:
            return
        metrics, operation = self.books.metrics, self.route.operation
        metrics.record_usage(operation, self.model, *outcome.usage)
        metrics.genai_duration.labels(operation, self.model).observe(outcome.upstream_seconds)

    def _end_span(self, outcome: Outcome) -> None:
        assert self.span is not None
        text = outcome.output_text if self.books.capture_content else None
        end_span(self.span, outcome.body, outcome.usage, text, outcome.error_type)

    async def _fill_caches(self, body: bytes) -> None:
        plan = self.plan
        if plan.exact_key is not None:
            with contextlib.suppress(RedisUnavailable):
                await self.books.cache.set(plan.exact_key, body)
        entry = plan.semantic
        if entry is not None and entry.vector is not None:
            await self.books.semantic.store_response(entry.scope, entry.prompt, entry.vector, body)

    def _record_request(self, status: int) -> None:
        metrics = self.books.metrics
        elapsed = time.perf_counter() - self.started
        metrics.request_done(self.route.name, status, self.model, elapsed, self.upstream_seconds)
        metrics.in_flight.dec()
        if self.books.access_log:
            access_log.info(
                "request",
                extra={
                    "request_id": self.request_id,
                    "route": self.route.name,
                    "status": status,
                    "model": self.model,
                    "key_id": self.key.id,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    def _log_exchange(self, status: int, outcome: Outcome) -> None:
        log = self.books.exchange_log
        if log is None or not log.enabled:
            return
        capture = None
        if self.sampled and status == 200 and self.captured_input is not None:
            capture = Capture(self.captured_input, outcome.output_text)
        self.books.background(log.append(self._record(status, outcome), capture))

    def _record(self, status: int, outcome: Outcome) -> dict[str, str]:
        context = (self.span or trace.get_current_span()).get_span_context()
        return {
            "request_id": self.request_id,
            "client_request_id": self.client_request_id or "",
            "key_id": self.key.id,
            "key_name": self.key.name,
            "model": self.model,
            "route": self.route.name,
            "status": str(status),
            "latency_ms": f"{(time.perf_counter() - self.started) * 1000:.1f}",
            "input_tokens": str(outcome.usage[0]),
            "output_tokens": str(outcome.usage[1]),
            "cache": self.headers.get("x-cache-kind") or self.headers.get("x-cache", ""),
            "trace_id": f"{context.trace_id:032x}" if context.is_valid else "",
            "span_id": f"{context.span_id:016x}" if context.is_valid else "",
            "at": f"{time.time():.3f}",
            "captured": "0",
        }


def estimate_tokens(chars: int) -> int:
    # About four characters per token for English BPE vocabularies; only used to
    # reserve tokens until the upstream reports the real usage.
    return math.ceil(chars / 4)


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
