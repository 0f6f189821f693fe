"""The upstream pool: which model server serves a request (balancing, retries, fallback).

Each upstream has one shared httpx connection pool, an in-flight counter and a
circuit breaker. A request goes to the less busy of two randomly drawn healthy
upstreams serving its model (power of two choices, weighted); which upstreams serve a
model is the pool's `RoutingTable` (routing.py): their static `models` plus what their
`/v1/models` listed at the last refresh (discovery.py). Connection errors and
502/503/504 are retried with exponential backoff and jitter, but only before the
first byte has reached the client; then the configured fallback models are tried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from gateway.breaker import CircuitBreaker
from gateway.errors import GatewayError, error_body
from gateway.keys import KeyRecord
from gateway.metrics import GatewayMetrics
from gateway.model_listing import Listing
from gateway.request_fields import cache_salt
from gateway.routing import RoutingTable
from gateway.settings import Settings, UpstreamConfig

log = logging.getLogger("gateway.upstreams")
# What a provider's error message may quote of a key: `sk-...`, `Bearer ...`, masked forms.
KEY_LIKE = re.compile(r"(?i)\b(?:sk|key|pk|rk)[-_][\w*.-]{4,}|\bbearer\s+\S+|\*{3,}\w*")
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY = object()  # an attempt that failed in a way worth trying again


class Upstream:
    """One upstream server: its connection pool (`transport` lets tests script it in
    process), in-flight count and breaker."""

    def __init__(
        self,
        config: UpstreamConfig,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.weight = config.weight
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.AsyncClient(
            base_url=config.api_base,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_seconds,
                read=settings.read_timeout_seconds,
                write=settings.read_timeout_seconds,
                pool=settings.connect_timeout_seconds,
            ),
            limits=httpx.Limits(
                max_connections=settings.max_connections_per_upstream,
                max_keepalive_connections=settings.max_connections_per_upstream,
                keepalive_expiry=30,
            ),
        )
        self.breaker = CircuitBreaker(
            settings.upstream_breaker_failures, settings.upstream_breaker_reset_seconds
        )
        self.in_flight = 0
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        """The absolute URL of `path`, parsed once (httpx re-joins a relative one per call)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.config.api_base + path)
        return url

    def load(self) -> float:
        return (self.in_flight + 1) / self.weight


@dataclass
class UpstreamCall:
    """An open upstream response (headers received, body not yet read)."""

    upstream: Upstream
    response: httpx.Response
    model: str
    started: float
    headers_at: float
    _closed: bool = field(default=False, repr=False)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.upstream.in_flight -= 1
            await self.response.aclose()


def provider_refusal(upstream: Upstream, status: int, body: bytes) -> tuple[int, bytes]:
    """What the client sees of an external provider's 4xx: a fresh OpenAI error with
    the provider's message minus anything key-like, its type, param and code (never its
    other fields or headers). 401/403 mean the gateway's own credentials: 502."""
    if status in (401, 403):
        message = f"Upstream '{upstream.name}' refused the gateway's credentials ({status})."
        return 502, orjson.dumps(error_body(message, "upstream_error", code="upstream_auth"))
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"Upstream '{upstream.name}' answered {status}.")
    if upstream.config.api_key:
        message = message.replace(upstream.config.api_key, "[redacted]")
    message = KEY_LIKE.sub("[redacted]", message[:2000])[:500]
    fields = [error.get(name) for name in ("type", "param", "code")]
    kind, param, code = (f if isinstance(f, str) else None for f in fields)
    return status, orjson.dumps(
        error_body(message, kind or "invalid_request_error", param, code or "upstream_rejected")
    )


class Bodies:
    """A request's JSON body, with and without the tenant's `cache_salt` (serialised
    once each, on first use): only upstreams that take the salt get it."""

    def __init__(self, payload: dict[str, Any], salt: str | None) -> None:
        self.payload = payload
        self.salt = salt
        self._encoded: dict[bool, bytes] = {}

    def for_upstream(self, upstream: Upstream) -> bytes:
        salted = self.salt is not None and upstream.config.salts_cache
        body = self._encoded.get(salted)
        if body is None:
            payload = {**self.payload, "cache_salt": self.salt} if salted else self.payload
            body = self._encoded[salted] = orjson.dumps(payload)
        return body


class UpstreamPool:
    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.upstreams = [Upstream(config, settings, transport) for config in settings.upstreams]
        self.routes: RoutingTable[Upstream] = RoutingTable.build(self.upstreams)
        self.aliases = dict(settings.model_aliases)
        self.fallbacks = {k: list(v) for k, v in settings.fallbacks.items()}

    def use_listings(self, listings: Mapping[str, Listing]) -> None:
        """Route by the static models plus these listings (upstream name -> listing)."""
        self.routes = RoutingTable.build(self.upstreams, listings)

    def resolve(self, model: str) -> str | None:
        """The served model name for a requested name or alias, None when unknown."""
        target = self.aliases.get(model, model)
        if target in self.routes.by_model or target in self.fallbacks:
            return target
        return None

    def model_names(self) -> list[str]:
        served = self.routes.by_model
        return [*served, *(a for a in self.aliases if a not in served)]

    def served_by(self, upstream: Upstream) -> list[str]:
        """The models routed to `upstream` now (static and listed)."""
        return [m for m, found in self.routes.by_model.items() if upstream in found]

    def parent_of(self, model: str) -> str | None:
        """The base model of a listed adapter, None for anything else."""
        return self.routes.parents.get(model)

    def _pick(self, model: str, tried: set[str]) -> Upstream | None:
        candidates = [u for u in self.routes.by_model.get(model, ()) if u.breaker.state != "open"]
        fresh = [u for u in candidates if u.name not in tried] or candidates
        if not fresh:
            return None
        if len(fresh) == 1:
            choice = fresh[0]
        else:
            first, second = random.choices(fresh, weights=[u.weight for u in fresh], k=2)
            choice = first if first.load() <= second.load() else second
        return choice if choice.breaker.allow() else None

    async def open(
        self,
        path: str,
        payload: Mapping[str, Any],
        model: str,
        extra_headers: Mapping[str, str] | None = None,
        key: KeyRecord | None = None,
    ) -> UpstreamCall:
        """Send the request and return once response headers arrive.

        Tries `model` then its fallbacks that `key` may use; raises GatewayError
        (502/503/504) when nothing could serve it. Upstream 4xx responses are returned,
        not raised. With a key, upstreams that take it get the key's `cache_salt`.
        """
        errors: list[str] = []
        salt = cache_salt(key.id) if key is not None else None
        for target in [model, *self.fallbacks.get(model, [])]:
            served = target in self.routes.by_model
            if not served or (key is not None and not key.allows_model(target)):
                continue
            bodies = Bodies({**payload, "model": target}, salt)
            call = await self._open_model(path, bodies, target, extra_headers, errors)
            if call is not None:
                return call
        if any(e.endswith("timed out") for e in errors):
            raise GatewayError(
                504, f"Upstream timed out for model '{model}'.", code="upstream_timeout"
            )
        detail = "; ".join(errors[-3:]) or "no healthy upstream"
        # Nothing reachable, or every upstream said it is overloaded: 503 (retry later).
        status = 503 if all("unavailable" in e or e.endswith("503") for e in errors) else 502
        raise GatewayError(
            status,
            f"No upstream could serve model '{model}' ({detail}).",
            code="upstream_unavailable" if status == 503 else "upstream_error",
        )

    async def _open_model(
        self,
        path: str,
        bodies: Bodies,
        model: str,
        extra_headers: Mapping[str, str] | None,
        errors: list[str],
    ) -> UpstreamCall | None:
        tried: set[str] = set()
        headers = {"content-type": "application/json", **(extra_headers or {})}
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                backoff = self.settings.retry_backoff_seconds * (2 ** (attempt - 1))
                await asyncio.sleep(backoff * (0.5 + random.random()))
            upstream = self._pick(model, tried)
            if upstream is None:
                errors.append(f"{model}: all upstreams unavailable")
                return None
            tried.add(upstream.name)
            body = bodies.for_upstream(upstream)
            call = await self._attempt(upstream, path, body, headers, model, errors)
            if call is not RETRY:
                return call
        return None

    async def _attempt(
        self,
        upstream: Upstream,
        path: str,
        body: bytes,
        headers: dict[str, str],
        model: str,
        errors: list[str],
    ) -> Any:
        """One try at one upstream: the open call, None to give up, or RETRY."""
        started = time.perf_counter()
        request = upstream.client.build_request(
            "POST", upstream.url(path), content=body, headers=headers
        )
        upstream.in_flight += 1
        try:
            response = await upstream.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            upstream.in_flight -= 1
            return self._timed_out(upstream, exc, errors)
        except httpx.TransportError as exc:
            upstream.in_flight -= 1
            self._failed(upstream, "connection")
            errors.append(f"{upstream.name} unavailable: {type(exc).__name__}")
            return RETRY
        except BaseException:
            upstream.in_flight -= 1
            upstream.breaker.release_trial()
            raise
        status = response.status_code
        if status in RETRY_STATUSES:
            await response.aclose()
            upstream.in_flight -= 1
            self._failed(upstream, f"status_{status}")
            errors.append(f"{upstream.name} answered {status}")
            return RETRY
        if status >= 500:
            self._failed(upstream, f"status_{status}")
        else:
            upstream.breaker.record_success()
        return UpstreamCall(upstream, response, model, started, time.perf_counter())

    def _timed_out(self, upstream: Upstream, exc: httpx.TimeoutException, errors: list[str]) -> Any:
        """RETRY or None after a timeout. Only a connect timeout counts against the
        upstream's breaker: a full pool is the gateway's own limit, and a read timeout
        before the headers is a long generation (the upstream may still be working on
        it, so it is not retried either)."""
        if isinstance(exc, httpx.ConnectTimeout):
            self._failed(upstream, "connect_timeout")
            errors.append(f"{upstream.name} timed out")
            return RETRY
        upstream.breaker.release_trial()
        if isinstance(exc, httpx.PoolTimeout):
            self.metrics.upstream_errors.labels(upstream.name, "pool_timeout").inc()
            errors.append(f"{upstream.name} unavailable: gateway connection pool full")
            return RETRY
        self.metrics.upstream_errors.labels(upstream.name, "timeout").inc()
        errors.append(f"{upstream.name} timed out")
        return None

    def _failed(self, upstream: Upstream, reason: str) -> None:
        upstream.breaker.record_failure()
        self.metrics.upstream_errors.labels(upstream.name, reason).inc()
        log.warning("upstream attempt failed", extra={"upstream": upstream.name, "reason": reason})

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        """Embeddings straight from an upstream (the semantic cache's vectors)."""
        call = await self.open("/embeddings", {"input": texts}, model)
        try:
            body = await call.response.aread()
        finally:
            await call.aclose()
        if call.response.status_code != 200:
            raise GatewayError(502, f"Embedding model '{model}' failed.", code="upstream_error")
        data = orjson.loads(body)["data"]
        return [item["embedding"] for item in sorted(data, key=lambda d: d["index"])]

    async def probe(self) -> dict[str, bool]:
        """Whether each upstream answers `GET /v1/models` now (for /readyz)."""

        async def one(upstream: Upstream) -> bool:
            try:
                response = await upstream.client.get("/models", timeout=2.0)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        results = await asyncio.gather(*(one(u) for u in self.upstreams))
        return {u.name: ok for u, ok in zip(self.upstreams, results, strict=True)}

    async def close(self) -> None:
        await asyncio.gather(*(u.client.aclose() for u in self.upstreams))
