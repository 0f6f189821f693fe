"""One request's bookkeeping through the pipeline: its route, key, timings, limit
reservation and response headers, and the metrics and access log line at its end."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from gateway.keys import KeyRecord
from gateway.ratelimit import LimitDecision
from gateway.redis_store import RedisUnavailable
from gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from gateway.state import GatewayState

access_log = logging.getLogger("gateway.access")

Route = Literal["chat", "completion", "embedding"]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    schema: type[BaseModel]
    operation: str  # GenAI operation name


ROUTES: dict[Route, RouteSpec] = {
    "chat": RouteSpec("/chat/completions", ChatCompletionRequest, "chat"),
    "completion": RouteSpec("/completions", CompletionRequest, "text_completion"),
    "embedding": RouteSpec("/embeddings", EmbeddingRequest, "embeddings"),
}


@dataclass
class Exchange:
    """What the pipeline knows about one request while handling it."""

    state: GatewayState
    route: Route
    key: KeyRecord
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = "unknown"
    upstream_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    limit: LimitDecision | None = None
    settled: bool = False
    finished: bool = False

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)

    def finish(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        metrics = self.state.metrics
        elapsed = time.perf_counter() - self.started
        metrics.request_done(self.route, status, self.model, elapsed, self.upstream_seconds)
        if self.state.settings.access_log:
            access_log.info(
                "request",
                extra={
                    "request_id": self.request_id,
                    "route": self.route,
                    "status": status,
                    "model": self.model,
                    "key_id": self.key.id,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    async def settle(self, actual_tokens: int) -> None:
        """Replace the token reservation with the real usage, off the request path
        (until it lands, the larger reservation counts: limits err on the safe side)."""
        if self.settled or self.limit is None or not self.limit.allowed:
            return
        self.settled = True
        if actual_tokens != self.limit.reserved:
            self.state.background(self._settle(self.limit, actual_tokens))

    async def _settle(self, limit: LimitDecision, actual_tokens: int) -> None:
        # If Redis is down the reservation stands; it expires with its window.
        with contextlib.suppress(RedisUnavailable):
            await self.state.limiter.settle(self.key, limit, actual_tokens)


def estimate_tokens(chars: int) -> int:
    # About four characters per token for English BPE vocabularies; only used to
    # reserve tokens until the upstream reports the real usage.
    return math.ceil(chars / 4)


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def response_headers(exchange: Exchange) -> dict[str, str]:
    return {
        **exchange.headers,
        "x-request-id": exchange.request_id,
        "x-gateway-overhead-ms": f"{exchange.overhead_ms():.3f}",
    }
