"""Model discovery: one background task re-reads each upstream's `/v1/models`.

Every `GATEWAY_MODELS_REFRESH_SECONDS` the upstreams that discover (`discover_models`,
by default those without `api_key_env`) are asked for their listing, all at once; the
pool then routes each model to the upstreams whose static `models` or last good listing
name it (routing.py). So a LoRA adapter loaded at run time on one model server is routed
there within one refresh, and stops being routed there within one refresh of being
unloaded. A failed read keeps that upstream's last good listing, counts in
`gateway_model_listings_total` (by result) and logs a warning when the upstream starts
failing (not on every retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.metrics import GatewayMetrics
from gateway.model_listing import Listing, ListingError, fetch_listing
from gateway.upstreams import Upstream, UpstreamPool

log = logging.getLogger("gateway.discovery")


class ModelDiscovery:
    def __init__(self, pool: UpstreamPool, interval_seconds: float, metrics: GatewayMetrics):
        self.pool = pool
        self.interval = interval_seconds
        self.metrics = metrics
        self.upstreams = [u for u in pool.upstreams if u.config.discovers]
        self.listings: dict[str, Listing] = {}  # the last good listing of each upstream
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and bool(self.upstreams)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-model-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read every listing once, then swap the pool's routing table."""
        found = await asyncio.gather(*(self._listing(u) for u in self.upstreams))
        for upstream, listing in zip(self.upstreams, found, strict=True):
            if listing is not None:
                self.listings[upstream.name] = listing
        self.pool.use_listings(self.listings)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not end discovery for the process' life
                log.exception("model discovery refresh failed")
            await asyncio.sleep(self.interval)

    async def _listing(self, upstream: Upstream) -> Listing | None:
        try:
            listing = await fetch_listing(upstream.client)
        except ListingError as exc:
            self._failed(upstream, exc)
            return None
        if upstream.name in self._failing:
            self._failing.discard(upstream.name)
            log.info("model listing readable again", extra={"upstream": upstream.name})
        previous = self.listings.get(upstream.name)
        if listing.truncated and not (previous and previous.truncated):
            taken = {"upstream": upstream.name, "taken": len(listing.models)}
            log.warning("upstream lists too many models; routing the first ones", extra=taken)
        self.metrics.listed_models.labels(upstream.name).set(len(listing.models))
        self.metrics.model_listings.labels(upstream.name, "ok").inc()
        return listing

    def _failed(self, upstream: Upstream, error: ListingError) -> None:
        self.metrics.model_listings.labels(upstream.name, error.reason).inc()
        # Only the upstream's name and our own description: never its URL or its answer.
        extra = {"upstream": upstream.name, "reason": error.reason, "detail": str(error)}
        if upstream.name not in self._failing:
            self._failing.add(upstream.name)
            log.warning("model listing unreadable; keeping the last good one", extra=extra)
        else:
            log.debug("model listing still unreadable", extra=extra)
