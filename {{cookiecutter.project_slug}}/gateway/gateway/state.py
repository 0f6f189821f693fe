"""Everything one gateway process holds: connections, pools, caches, metrics.

Built once per app (no per-request setup) and stored on `app.state.gateway`, so
in-process callers (the RAG router through `httpx.ASGITransport(app=request.app)`)
reach the same pools, limits and caches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.requests import HTTPConnection

from gateway.cache import ExactCache
from gateway.guardrails import Guardrails
from gateway.keys import KeyStore
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import RateLimiter
from gateway.redis_store import RedisStore
from gateway.router import Router
from gateway.semantic_cache import SemanticCache
from gateway.settings import Settings
from gateway.tracing import configure_tracing

log = logging.getLogger("gateway")


class GatewayState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.store = RedisStore(settings)
        self.keys = KeyStore(
            self.store,
            settings.master_key,
            settings.key_cache_ttl_seconds,
            settings.key_refresh_seconds,
        )
        self.limiter = RateLimiter(self.store)
        self.cache = ExactCache(
            self.store, settings.cache_version, settings.cache_ttl_seconds, settings.cache_scope
        )
        self.router = Router(settings, self.metrics)
        self.semantic = SemanticCache(settings, self.store, self.embed_one)
        self.guardrails = Guardrails(settings)
        self._background: set[asyncio.Task[None]] = set()
        self.tracing = configure_tracing()
        if self.tracing:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            for upstream in self.router.upstreams:
                HTTPXClientInstrumentor.instrument_client(upstream.client)

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping off the request path (kept referenced until done)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def embed_one(self, text: str) -> list[float]:
        return (await self.router.embed([text], self.settings.embedding_model))[0]

    async def start(self) -> None:
        if not await self.store.ping():
            log.warning("redis not reachable at startup; serving degraded until it is")
        await self.semantic.check_search_module()

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.semantic.close()
        await self.router.close()
        await self.store.close()


def get_state(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state.gateway
    return state
