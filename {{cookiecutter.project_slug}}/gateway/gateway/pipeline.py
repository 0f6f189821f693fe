"""The request pipeline of the OpenAI-compatible routes, as named stages.

    admit → guard_input → plan_cache → reserve → read_cache → call_upstream
          → answer_json | open_stream (stream_relay.py)    cached: serve_cached

Each stage is a method with one job. `Pipeline.handle` runs them for one request and
returns either a whole `Answer` (JSON, or a replayed cached stream) or a
`StreamAnswer`; the exchange is closed from one `finally` here for whole answers and
from one `finally` in the stream relay for streams. HTTP (`api.py`) and RAG
(`rag/models.py`) both call `handle`, so keys, limits, caches, guardrails, metrics and
spans apply to every model call alike. Built once at startup with its collaborators.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import ValidationError

from gateway import sse
from gateway.cache import ExactCache, is_deterministic
from gateway.errors import GatewayError, error_body
from gateway.exchange import (
    Books,
    CachePlan,
    Exchange,
    Outcome,
    SemanticEntry,
    estimate_tokens,
    usage_tokens,
)
from gateway.genai_spans import start_span
from gateway.guardrails import Guardrails, GuardrailViolation
from gateway.keys import KeyRecord
from gateway.ratelimit import LimitDecision, RateLimiter
from gateway.redis_store import RedisStore, RedisUnavailable
from gateway.request_fields import forwarded
from gateway.route_adapters import RouteAdapter
from gateway.semantic_cache import SemanticCache
from gateway.settings import Settings
from gateway.spend import from_nano
from gateway.stream_relay import STREAM_HEADERS, StreamAnswer, open_stream
from gateway.tracing import tracing_requested
from gateway.upstreams import UpstreamCall, UpstreamPool, provider_refusal


@dataclass(frozen=True)
class Admitted:
    """A request the pipeline accepted: validated, model resolved, caps applied."""

    route: RouteAdapter
    payload: dict[str, Any]
    model: str
    texts: list[str]
    prompt_chars: int
    prompt_tokens: int  # estimated: text at ~4 characters a token, token ids as they are
    max_tokens: int | None
    stream: bool
    include_usage: bool


@dataclass
class Answer:
    """A whole response body (JSON, or the events of a replayed cached stream)."""

    status: int
    body: bytes
    headers: dict[str, str]
    media_type: str = "application/json"
    outcome: Outcome = field(default_factory=Outcome)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        limiter: RateLimiter,
        cache: ExactCache,
        semantic: SemanticCache,
        upstreams: UpstreamPool,
        guardrails: Guardrails,
        books: Books,
    ) -> None:
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self.cache = cache
        self.semantic = semantic
        self.upstreams = upstreams
        self.guardrails = guardrails
        self.books = books
        self.metrics = books.metrics
        self.tracing = tracing_requested()

    async def handle(
        self,
        route: RouteAdapter,
        key: KeyRecord,
        payload: dict[str, Any] | bytes,
        request_id: str,
        bypass_cache: bool = False,
        client_request_id: str | None = None,
    ) -> Answer | StreamAnswer:
        """Run one request through the stages; raises GatewayError for refusals."""
        exchange = Exchange(self.books, route, key, request_id)
        exchange.client_request_id = client_request_id
        log = self.books.exchange_log
        exchange.sampled = log is not None and route.generates and log.sampled(key)
        status, outcome, streaming = 500, Outcome(), False
        try:
            answer = await self._run(exchange, payload, bypass_cache)
            streaming = isinstance(answer, StreamAnswer)
            if isinstance(answer, Answer):
                status, outcome = answer.status, answer.outcome
            return answer
        except GatewayError as exc:
            status, outcome = exc.status, Outcome(error_type=exc.code or str(exc.status))
            exc.headers.setdefault("x-request-id", request_id)
            raise
        finally:
            if not streaming:
                await exchange.close(status, outcome)

    async def _run(
        self, exchange: Exchange, payload: dict[str, Any] | bytes, bypass_cache: bool
    ) -> Answer | StreamAnswer:
        request = self.admit(exchange, payload)
        request = await self.guard_input(request)
        if exchange.sampled:  # the input as the upstream sees it (redacted when configured)
            exchange.captured_input = request.route.captured_input(request.payload)
        exchange.plan = await self.plan_cache(exchange, request, bypass_cache)
        prefetched = await self.reserve(exchange, request)
        cached = await self.read_cache(exchange, request, prefetched)
        if cached is not None:
            return self.serve_cached(exchange, request, *cached)
        call = await self.call_upstream(exchange, request)
        if call.response.status_code != 200:
            return await self.upstream_refused(exchange, call)
        if request.stream:
            return await open_stream(exchange, call, request.include_usage, self.guardrails)
        return await self.answer_json(exchange, request, call)

    # admit ------------------------------------------------------------------------------
    def admit(self, exchange: Exchange, payload: dict[str, Any] | bytes) -> Admitted:
        """Validate the body, resolve the model, check the key and the prompt and
        max_tokens caps."""
        route = exchange.route
        payload = forwarded(_validated(route, payload), route.fields, self.settings.forward_fields)
        exchange.model = model = self._served_model(payload["model"], exchange.key)
        texts = route.texts(payload)
        prompt_chars = sum(len(t) for t in texts)
        if prompt_chars > self.settings.max_prompt_chars:
            limit = self.settings.max_prompt_chars
            raise GatewayError(
                400,
                f"The prompt has {prompt_chars} characters; the limit is {limit}.",
                code="prompt_too_long",
            )
        max_tokens = None
        if route.generates:
            max_tokens = _cap_max_tokens(
                payload, exchange.key.max_tokens or self.settings.max_tokens_cap
            )
        stream = route.generates and payload.get("stream") is True
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        prompt_tokens = estimate_tokens(prompt_chars) + route.prompt_token_ids(payload)
        exchange.prompt_estimate = prompt_tokens
        return Admitted(
            route,
            payload,
            model,
            texts,
            prompt_chars,
            prompt_tokens,
            max_tokens,
            stream,
            include_usage,
        )

    def _served_model(self, requested: str, key: KeyRecord) -> str:
        model = self.upstreams.resolve(requested)
        if model is None:
            raise GatewayError(
                404,
                f"The model '{requested}' does not exist or is not served here.",
                param="model",
                code="model_not_found",
            )
        if not (key.allows_model(requested) or key.allows_model(model)):
            raise GatewayError(
                403,
                f"This key may not use model '{requested}'.",
                param="model",
                code="model_denied",
            )
        return model

    # guard_input ------------------------------------------------------------------------
    async def guard_input(self, request: Admitted) -> Admitted:
        """Refuse denied input (400); redact personal data when configured."""
        guardrails = self.guardrails
        if not guardrails.inspects_input:
            return request
        try:
            guardrails.refuse_unreadable(request.payload)
            await guardrails.check_input(request.texts)
        except GuardrailViolation as exc:
            raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
        if guardrails.pii_input != "redact":
            return request
        payload = await guardrails.in_thread_if_long(
            request.prompt_chars, request.route.redact, request.payload, guardrails.redact_input
        )
        return replace(request, payload=payload, texts=request.route.texts(payload))

    # plan_cache -------------------------------------------------------------------------
    async def plan_cache(self, exchange: Exchange, request: Admitted, bypass: bool) -> CachePlan:
        """Which cache entries this request may read and fill (a value, decided once)."""
        settings, route, payload = self.settings, request.route, request.payload
        cacheable = (
            settings.cache_enabled
            and not bypass  # n > 1 is cached as a whole, every choice
            and (
                not route.needs_determinism
                or not settings.cache_only_deterministic
                or is_deterministic(payload)
            )
        )
        exchange.headers["x-cache"] = "miss" if cacheable else "bypass"
        if not cacheable:
            return CachePlan()
        semantic = None
        if route.semantic_cacheable and self.semantic.enabled:
            key_id, chars = exchange.key.id, request.prompt_chars
            found = await self.semantic.key(request.model, payload, key_id, chars)
            semantic = SemanticEntry(*found) if found is not None else None
        exact_key = self.cache.key(route.name, request.model, payload, exchange.key.id)
        return CachePlan(exact_key, semantic)

    # reserve ----------------------------------------------------------------------------
    async def reserve(self, exchange: Exchange, request: Admitted) -> Prefetched | None:
        """Reserve tokens against the key's limits (429 when refused). The exact-cache
        entry is read in the same Redis round trip; returns it when it was read."""
        key, plan = exchange.key, exchange.plan
        if not self.limiter.applies_to(key):
            return None
        tokens, cost = self._reservation(request)
        command = self.limiter.reserve_command(key, tokens, cost)
        try:
            raw, value = await self.store.call_and_get(command, plan.exact_key)
        except RedisUnavailable:
            if self.settings.rate_limit_fail_open:
                self.metrics.rate_limit_skipped.inc()
                return None
            raise GatewayError(
                503,
                "Rate limits cannot be checked right now (Redis unavailable); retry shortly.",
                code="rate_limiter_unavailable",
                headers={"retry-after": "5"},
            ) from None
        decision = self.limiter.decision(key, tokens, raw, cost)
        exchange.headers.update(decision.headers())
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.limit).inc()
            if decision.limit.startswith("budget"):
                raise _budget_exceeded(decision)
            raise _rate_limited(decision, tokens)
        exchange.limit = decision
        return Prefetched(value) if plan.exact_key is not None else None

    def _reservation(self, request: Admitted) -> tuple[int, int]:
        """The worst case a request may use: tokens, and their cost in nano-units."""
        completion = request.max_tokens or self.settings.default_max_tokens_reserve
        # Every prompt of a batch gets n completions.
        completions = int(request.payload.get("n") or 1) * request.route.prompt_count(
            request.payload
        )
        output = completion * completions if request.route.generates else 0
        cost = self.books.prices.cost(request.model, request.prompt_tokens, output)
        return request.prompt_tokens + output, cost

    # read_cache -------------------------------------------------------------------------
    async def read_cache(
        self, exchange: Exchange, request: Admitted, prefetched: Prefetched | None
    ) -> tuple[bytes, str] | None:
        """A cached answer and its kind (exact|semantic), or None; records the lookups."""
        plan, counter = exchange.plan, self.metrics.cache
        if plan.exact_key is None:
            counter.labels("exact", "bypass").inc()
            return None
        cached = prefetched.value if prefetched is not None else await self._read_exact(exchange)
        counter.labels("exact", "hit" if cached else "miss").inc()
        if cached is not None:
            return cached, "exact"
        entry = plan.semantic
        if entry is None:
            return None
        try:
            cached, vector = await self.semantic.lookup(entry.scope, entry.prompt)
        except GatewayError:
            cached, vector = None, None  # embedder down: serve without the cache
        counter.labels("semantic", "hit" if cached else "miss").inc()
        exchange.plan = replace(plan, semantic=replace(entry, vector=vector) if vector else None)
        return (cached, "semantic") if cached is not None else None

    async def _read_exact(self, exchange: Exchange) -> bytes | None:
        assert exchange.plan.exact_key is not None
        try:
            return await self.cache.get(exchange.plan.exact_key)
        except RedisUnavailable:
            exchange.plan = replace(exchange.plan, exact_key=None)
            return None

    def serve_cached(self, exchange: Exchange, request: Admitted, body: bytes, kind: str) -> Answer:
        exchange.headers["x-cache"] = "hit"
        exchange.headers["x-cache-kind"] = kind
        outcome = Outcome()
        if exchange.sampled:
            outcome.output_text = request.route.first_text(orjson.loads(body))
        if not request.stream:
            return Answer(200, body, exchange.response_headers(), outcome=outcome)
        events = sse.replay(request.route, orjson.loads(body), request.include_usage)
        headers = {**exchange.response_headers(), **STREAM_HEADERS}
        return Answer(200, b"".join(events), headers, "text/event-stream", outcome)

    # call_upstream ----------------------------------------------------------------------
    async def call_upstream(self, exchange: Exchange, request: Admitted) -> UpstreamCall:
        """Send the request to an upstream (retries, breaker, fallback); returns once
        its response headers arrived."""
        payload = request.payload
        if request.stream and not request.include_usage:
            # Ask for usage anyway to settle the token reservation; the client never sees it.
            options = {**(payload.get("stream_options") or {}), "include_usage": True}
            payload = {**payload, "stream_options": options}
        span = exchange.span = self._start_span(exchange, request) if self.tracing else None
        # The upstream call's own spans (httpx) become children of the GenAI span.
        with trace.use_span(span, end_on_exit=False) if span else contextlib.nullcontext():
            call = await self.upstreams.open(
                request.route.path,
                payload,
                request.model,
                _upstream_headers(exchange),
                exchange.key,
            )
        if exchange.span is not None:
            exchange.span.set_attribute("server.address", call.upstream.name)
        return call

    def _start_span(self, exchange: Exchange, request: Admitted) -> Span:
        ids = {"gateway.request_id": exchange.request_id, "gateway.key_id": exchange.key.id}
        texts = request.texts if self.settings.capture_content else None
        return start_span(request.route.operation, request.model, request.payload, ids, texts)

    async def upstream_refused(self, exchange: Exchange, call: UpstreamCall) -> Answer:
        """An upstream's own error: 5xx becomes 502; 4xx is passed on in OpenAI's shape."""
        body = await _read_body(call, tolerate_errors=True)
        exchange.upstream_seconds = time.perf_counter() - call.started
        status = call.response.status_code
        if status >= 500:
            message = f"Upstream '{call.upstream.name}' failed with status {status}."
            raise GatewayError(502, message, code="upstream_error")
        if call.upstream.config.api_key_env is not None:
            # An external provider: its answer may quote the gateway's provider key.
            status, body = provider_refusal(call.upstream, status, body)
        elif not _is_openai_error(body):
            text = body.decode(errors="replace")[:500] or f"Upstream answered {status}."
            body = orjson.dumps(error_body(text, "invalid_request_error", code="upstream_rejected"))
        outcome = Outcome(error_type=str(status))
        return Answer(status, body, exchange.response_headers(), outcome=outcome)

    async def _read_answer(self, call: UpstreamCall) -> bytes:
        try:
            return await _read_body(call, tolerate_errors=False)
        except httpx.TimeoutException:
            raise GatewayError(504, "The upstream timed out.", code="upstream_timeout") from None
        except httpx.HTTPError:
            self.metrics.upstream_errors.labels(call.upstream.name, "read").inc()
            raise GatewayError(
                502, "The upstream connection failed.", code="upstream_error"
            ) from None

    # answer_json ------------------------------------------------------------------------
    async def answer_json(
        self, exchange: Exchange, request: Admitted, call: UpstreamCall
    ) -> Answer:
        """Read the whole upstream answer, filter its output, hand it on."""
        raw = await self._read_answer(call)
        exchange.upstream_seconds = time.perf_counter() - call.started
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(
                502, "The upstream answered invalid JSON.", code="upstream_error"
            ) from None
        route = request.route
        usage = usage_tokens(body.get("usage"))
        outcome = Outcome(usage, exchange.upstream_seconds, body)
        if self.guardrails.pii_output != "off" and route.generates:
            try:
                if route.filter_output(body, self.guardrails.filter_output):
                    raw = orjson.dumps(body)
            except GuardrailViolation as exc:
                raise GatewayError(502, exc.message, code=exc.code) from None
        wanted = self.books.capture_content or exchange.sampled
        outcome.output_text = route.first_text(body) if wanted else None
        outcome.cache_body = raw
        return Answer(200, raw, exchange.response_headers(), outcome=outcome)


def _upstream_headers(exchange: Exchange) -> dict[str, str]:
    """The gateway's id, and the caller's own id beside it (never in its place)."""
    headers = {"x-request-id": exchange.request_id}
    if exchange.client_request_id is not None:
        headers["x-client-request-id"] = exchange.client_request_id
    return headers


@dataclass(frozen=True)
class Prefetched:
    """A cache entry read in the reservation's round trip (None: not in the cache)."""

    value: bytes | None


def _validated(route: RouteAdapter, payload: dict[str, Any] | bytes) -> dict[str, Any]:
    if isinstance(payload, bytes):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise GatewayError(
                400, "The request body is not valid JSON.", code="invalid_json"
            ) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        route.schema.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        raise GatewayError(400, message, param=param, code="invalid_request") from None
    return payload


TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _cap_max_tokens(payload: dict[str, Any], cap: int | None) -> int | None:
    """Check both token fields against the key's cap (400 over it); fill `max_tokens`
    with the cap when neither is set. Returns the completion budget to reserve."""
    requested = {name: payload[name] for name in TOKEN_FIELDS if payload.get(name) is not None}
    if cap is not None:
        for name, value in requested.items():
            if value > cap:
                raise GatewayError(
                    400,
                    f"{name} is {value}; this key allows at most {cap}.",
                    param=name,
                    code="max_tokens_exceeded",
                )
        if not requested:
            payload["max_tokens"] = cap
            return cap
    return max(requested.values()) if requested else None


def _rate_limited(decision: LimitDecision, tokens: int) -> GatewayError:
    if decision.limit == "tokens" and decision.tpm is not None and tokens > decision.tpm:
        message = (
            f"This request needs about {tokens} tokens, more than the key's limit of "
            f"{decision.tpm} per minute; lower max_tokens or the prompt."
        )
    else:
        message = (
            f"Rate limit reached for {decision.limit} per minute; "
            f"retry after {decision.retry_after}s."
        )
    return GatewayError(
        429, message, code=f"rate_limit_{decision.limit}", headers=decision.headers()
    )


def _budget_exceeded(decision: LimitDecision) -> GatewayError:
    whose = "team's" if decision.limit == "budget_team" else "key's"
    message = (
        f"The {whose} {decision.budget_period} budget of {from_nano(decision.budget):.6g} "
        f"is spent ({from_nano(decision.spent):.6g} used); it resets in "
        f"{decision.retry_after}s."
    )
    return GatewayError(
        429, message, code="budget_exceeded", headers={"retry-after": str(decision.retry_after)}
    )


async def _read_body(call: UpstreamCall, tolerate_errors: bool) -> bytes:
    try:
        return await call.response.aread()
    except httpx.HTTPError:
        if tolerate_errors:
            return b""
        raise
    finally:
        await call.aclose()


def _is_openai_error(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
