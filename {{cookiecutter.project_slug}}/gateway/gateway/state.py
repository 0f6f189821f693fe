"""Everything one gateway process holds: connections, pools, caches, metrics, and the
pipeline built from them.

Built once per app (no per-request setup) and handed to `create_app`; routes reach it
through the dependencies in `deps.py`. Tests build one against a real Redis server and
a scripted upstream (`upstream_transport`) and call the pipeline in process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import httpx

from gateway.cache import ExactCache
from gateway.discovery import ModelDiscovery
from gateway.exchange import Books
from gateway.exchange_log import ExchangeLog, LoopMetrics
from gateway.guardrails import Guardrails
from gateway.keys import InvalidKeyGuard, KeyStore
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.ratelimit import RateLimiter
from gateway.redis_store import RedisStore
from gateway.semantic_cache import SemanticCache
from gateway.settings import Settings
from gateway.spend import Prices
from gateway.tracing import configure_tracing
from gateway.upstreams import UpstreamPool

log = logging.getLogger("gateway")


class GatewayState:
    def __init__(
        self, settings: Settings, upstream_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.store = RedisStore(settings)
        self.keys = KeyStore(
            self.store,
            settings.master_key,
            settings.key_cache_ttl_seconds,
            settings.key_refresh_seconds,
            InvalidKeyGuard(
                settings.invalid_key_cache_seconds, settings.invalid_keys_per_client_per_minute
            ),
        )
        self.limiter = RateLimiter(self.store, settings.usage_retention_hours * 3600)
        self.cache = ExactCache(
            self.store, settings.cache_version, settings.cache_ttl_seconds, settings.cache_scope
        )
        self.upstreams = UpstreamPool(settings, self.metrics, upstream_transport)
        self.discovery = ModelDiscovery(
            self.upstreams, settings.models_refresh_seconds, self.metrics
        )
        self.semantic = SemanticCache(settings, self.store, self.embed_one)
        self.guardrails = Guardrails(settings)
        self.loop_metrics = LoopMetrics(self.metrics.registry)
        self.exchange_log = ExchangeLog(settings, self.store, self.loop_metrics)
        self._background: set[asyncio.Task[None]] = set()
        self.tracing = configure_tracing()
        if self.tracing:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            for upstream in self.upstreams.upstreams:
                HTTPXClientInstrumentor.instrument_client(upstream.client)
        self.pipeline = self._build_pipeline()

    def _build_pipeline(self) -> Pipeline:
        books = Books(
            metrics=self.metrics,
            limiter=self.limiter,
            cache=self.cache,
            semantic=self.semantic,
            background=self.background,
            access_log=self.settings.access_log,
            capture_content=self.settings.capture_content,
            prices=Prices.from_table(self.settings.model_prices),
            usage_ttl_seconds=self.settings.usage_retention_hours * 3600,
            exchange_log=self.exchange_log,
        )
        return Pipeline(
            self.settings,
            self.store,
            self.limiter,
            self.cache,
            self.semantic,
            self.upstreams,
            self.guardrails,
            books,
        )

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping off the request path (kept referenced until done)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def embed_one(self, text: str) -> list[float]:
        return (await self.upstreams.embed([text], self.settings.embedding_model))[0]

    async def start(self) -> None:
        if not await self.store.ping():
            log.warning("redis not reachable at startup; serving degraded until it is")
        await self.semantic.check_search_module()
        self.discovery.start()

    async def stop(self) -> None:
        await self.discovery.stop()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.semantic.close()
        await self.upstreams.close()
        await self.store.close()
