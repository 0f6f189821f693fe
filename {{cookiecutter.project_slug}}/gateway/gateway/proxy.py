"""The request pipeline of the OpenAI-compatible routes.

auth (dependency) → body/prompt limits → guardrails → rate-limit reservation → exact
cache → semantic cache → router (retries, breaker, fallback) → response or stream
relay → settle tokens, store in cache, record metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway import sse
from gateway.cache import bypass_requested, is_deterministic
from gateway.errors import GatewayError, error_body
from gateway.exchange import (
    ROUTES,
    Exchange,
    Route,
    RouteSpec,
    estimate_tokens,
    response_headers,
    usage_tokens,
)
from gateway.genai_spans import end_span, first_text, start_span
from gateway.guardrails import GuardrailViolation
from gateway.keys import KeyRecord
from gateway.redis_store import RedisUnavailable
from gateway.router import UpstreamCall
from gateway.schemas import (
    map_part_texts,
    message_texts,
    prompt_texts,
)
from gateway.state import GatewayState, get_state
from gateway.streaming import SSEResponse, relay_response

log = logging.getLogger("gateway.proxy")


def _texts(route: Route, payload: dict[str, Any]) -> list[str]:
    if route == "chat":
        return message_texts(payload["messages"])
    if route == "completion":
        return prompt_texts(payload["prompt"])
    return prompt_texts(payload["input"])


def _redact_payload(route: Route, payload: dict[str, Any], redact: Any) -> dict[str, Any]:
    if route == "chat":
        messages = []
        for message in payload["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                message = {**message, "content": redact(content)}
            elif isinstance(content, list):
                message = {**message, "content": map_part_texts(content, redact)}
            messages.append(message)
        return {**payload, "messages": messages}
    field_name = "prompt" if route == "completion" else "input"
    value = payload[field_name]
    if isinstance(value, str):
        value = redact(value)
    elif isinstance(value, list):
        value = [redact(v) if isinstance(v, str) else v for v in value]
    return {**payload, field_name: value}


async def read_payload(request: Request, state: GatewayState, spec: RouteSpec) -> dict[str, Any]:
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"Request body exceeds {limit} bytes.", code="body_too_large")
    # Read incrementally so a chunked upload without content-length cannot make the
    # gateway buffer more than the limit.
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise GatewayError(413, f"Request body exceeds {limit} bytes.", code="body_too_large")
        parts.append(part)
    body = b"".join(parts)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(
            400, "The request body is not valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        spec.schema.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        raise GatewayError(400, message, param=param, code="invalid_request") from None
    return payload


async def handle(request: Request, key: KeyRecord, route: Route) -> Response:
    state = get_state(request)
    exchange = Exchange(state, route, key, request.headers.get("x-request-id") or uuid.uuid4().hex)
    state.metrics.in_flight.inc()
    try:
        response = await _handle(request, exchange)
    except GatewayError as exc:
        await exchange.settle(0)
        exc.headers.setdefault("x-request-id", exchange.request_id)
        exchange.finish(exc.status)
        return exc.response()
    except BaseException:
        await exchange.settle(0)
        exchange.finish(500)
        raise
    if not isinstance(response, SSEResponse):
        exchange.finish(response.status_code)
    return response


async def _handle(request: Request, exchange: Exchange) -> Response:
    state, route, key = exchange.state, exchange.route, exchange.key
    settings = state.settings
    spec = ROUTES[route]
    payload = await read_payload(request, state, spec)

    requested = payload["model"]
    model = state.router.resolve(requested)
    if model is None:
        raise GatewayError(
            404,
            f"The model '{requested}' does not exist or is not served here.",
            param="model",
            code="model_not_found",
        )
    exchange.model = model
    if not (key.allows_model(requested) or key.allows_model(model)):
        raise GatewayError(
            403, f"This key may not use model '{requested}'.", param="model", code="model_denied"
        )

    texts = _texts(route, payload)
    prompt_chars = sum(len(t) for t in texts)
    if prompt_chars > settings.max_prompt_chars:
        raise GatewayError(
            400,
            f"The prompt has {prompt_chars} characters; the limit is {settings.max_prompt_chars}.",
            code="prompt_too_long",
        )

    max_tokens = None
    if route != "embedding":
        max_tokens = _apply_max_tokens_cap(payload, key, settings.max_tokens_cap)

    guardrails = state.guardrails
    if guardrails.inspects_input:
        try:
            guardrails.refuse_unreadable(payload)
            await guardrails.check_input(texts)
        except GuardrailViolation as exc:
            raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
        if guardrails.pii_input == "redact":
            payload = await guardrails.in_thread_if_long(
                prompt_chars, _redact_payload, route, payload, guardrails.redact_input
            )

    stream = route != "embedding" and payload.get("stream") is True
    bypass = bypass_requested(request.headers)
    cacheable = (
        settings.cache_enabled
        and not bypass
        and int(payload.get("n") or 1) == 1
        and (
            route == "embedding"
            or not settings.cache_only_deterministic
            or is_deterministic(payload)
        )
    )
    cache_key = state.cache.key(route, model, payload, key.id) if cacheable else None
    exchange.headers["x-cache"] = "bypass" if cache_key is None else "miss"

    cached: bytes | None = None
    cache_read = False
    if state.limiter.applies_to(key):
        completion_budget = (max_tokens or settings.default_max_tokens_reserve) * int(
            payload.get("n") or 1
        )
        # One Redis round trip: the limit check and the cache lookup together.
        cached, cache_read = await _reserve(
            exchange, estimate_tokens(prompt_chars) + completion_budget, cache_key
        )
    metrics = state.metrics
    if cache_key is not None:
        if not cache_read:
            try:
                cached = await state.cache.get(cache_key)
            except RedisUnavailable:
                cache_key = None
        metrics.cache.labels("exact", "hit" if cached else "miss").inc()
        if cached is not None:
            return await _cached_response(exchange, cached, stream, payload, "exact")
    else:
        metrics.cache.labels("exact", "bypass").inc()

    semantic: tuple[str, str, list[float]] | None = None
    if route == "chat" and state.semantic.enabled and cacheable:
        found = await state.semantic.key(model, payload, key.id, prompt_chars)
        if found is not None:
            scope, prompt = found
            try:
                cached, vector = await state.semantic.lookup(scope, prompt)
            except GatewayError:
                cached, vector = None, None  # embedder down: serve without the cache
            metrics.cache.labels("semantic", "hit" if cached else "miss").inc()
            if cached is not None:
                return await _cached_response(exchange, cached, stream, payload, "semantic")
            if vector is not None:
                semantic = (scope, prompt, vector)

    upstream_payload = payload
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    if stream and not include_usage:
        # Ask for usage anyway to settle the token reservation; the client never sees it.
        upstream_payload = {
            **payload,
            "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True},
        }

    span = start_span(exchange, spec, payload, model, texts)
    try:
        with trace.use_span(span, end_on_exit=False) if span else _nullcontext():
            call = await state.router.open(
                spec.path, upstream_payload, model, {"x-request-id": exchange.request_id}
            )
    except GatewayError as exc:
        if span is not None:
            span.set_attribute("error.type", exc.code or "upstream_error")
            span.end()
        raise
    if span is not None:
        span.set_attribute("server.address", call.upstream.name)

    if call.response.status_code != 200:
        return await _upstream_error(exchange, call, span)
    if stream:
        return relay_response(exchange, call, span, cache_key, semantic, include_usage)
    return await _complete(exchange, call, span, cache_key, semantic, route)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _apply_max_tokens_cap(
    payload: dict[str, Any], key: KeyRecord, default_cap: int | None
) -> int | None:
    cap = key.max_tokens or default_cap
    field_name = "max_completion_tokens" if payload.get("max_completion_tokens") else "max_tokens"
    requested = payload.get(field_name)
    if cap is not None:
        if requested is not None and requested > cap:
            raise GatewayError(
                400,
                f"{field_name} is {requested}; this key allows at most {cap}.",
                param=field_name,
                code="max_tokens_exceeded",
            )
        if requested is None:
            payload["max_tokens"] = cap
            return cap
    return int(requested) if requested is not None else None


async def _reserve(
    exchange: Exchange, tokens: int, cache_key: str | None
) -> tuple[bytes | None, bool]:
    """Reserve against the key's limits (429 when refused); returns the cache entry
    read in the same round trip and whether it could be read."""
    state = exchange.state
    try:
        decision, cached = await state.limiter.reserve(exchange.key, tokens, cache_key)
    except RedisUnavailable:
        if state.settings.rate_limit_fail_open:
            state.metrics.rate_limit_skipped.inc()
            return None, False
        raise GatewayError(
            503,
            "Rate limits cannot be checked right now (Redis unavailable); retry shortly.",
            code="rate_limiter_unavailable",
            headers={"retry-after": "5"},
        ) from None
    exchange.headers.update(decision.headers())
    if not decision.allowed:
        state.metrics.rate_limited.labels(decision.limit).inc()
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
        raise GatewayError(
            429,
            message,
            code=f"rate_limit_{decision.limit}",
            headers={**decision.headers(), "x-request-id": exchange.request_id},
        )
    exchange.limit = decision
    return (bytes(cached) if cached is not None else None), cache_key is not None


async def _cached_response(
    exchange: Exchange, cached: bytes, stream: bool, payload: dict[str, Any], kind: str
) -> Response:
    exchange.headers["x-cache"] = "hit"
    exchange.headers["x-cache-kind"] = kind
    await exchange.settle(0)
    if not stream:
        return Response(cached, media_type="application/json", headers=response_headers(exchange))
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    events = list(sse.replay(orjson.loads(cached), exchange.route, include_usage))
    headers = {
        **response_headers(exchange),
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    return Response(b"".join(events), media_type="text/event-stream", headers=headers)


async def _upstream_error(exchange: Exchange, call: UpstreamCall, span: Span | None) -> Response:
    try:
        body = await call.response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await call.aclose()
    exchange.upstream_seconds = time.perf_counter() - call.started
    status = call.response.status_code
    if span is not None:
        span.set_attribute("error.type", str(status))
        span.end()
    try:
        parsed = orjson.loads(body)
        shaped = isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
    except orjson.JSONDecodeError:
        shaped = False
    if status >= 500:
        message = f"Upstream '{call.upstream.name}' failed with status {status}."
        raise GatewayError(502, message, code="upstream_error")
    if not shaped:
        text = body.decode(errors="replace")[:500] or f"Upstream answered {status}."
        body = orjson.dumps(error_body(text, "invalid_request_error", code="upstream_rejected"))
    await exchange.settle(0)
    return Response(
        body, status_code=status, media_type="application/json", headers=response_headers(exchange)
    )


def _filter_output(exchange: Exchange, body: dict[str, Any]) -> bool:
    """Apply the output PII policy to each choice; True when something changed."""
    guardrails = exchange.state.guardrails
    changed = False
    for choice in body.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            filtered = guardrails.filter_output(message["content"])
            changed |= filtered != message["content"]
            message["content"] = filtered
        elif isinstance(choice.get("text"), str):
            filtered = guardrails.filter_output(choice["text"])
            changed |= filtered != choice["text"]
            choice["text"] = filtered
    return changed


async def _complete(
    exchange: Exchange,
    call: UpstreamCall,
    span: Span | None,
    cache_key: str | None,
    semantic: tuple[str, str, list[float]] | None,
    route: Route,
) -> Response:
    state = exchange.state
    try:
        raw = await call.response.aread()
    except httpx.TimeoutException:
        raise GatewayError(504, "The upstream timed out.", code="upstream_timeout") from None
    except httpx.HTTPError:
        state.metrics.upstream_errors.labels(call.upstream.name, "read").inc()
        raise GatewayError(502, "The upstream connection failed.", code="upstream_error") from None
    finally:
        await call.aclose()
    exchange.upstream_seconds = time.perf_counter() - call.started
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(
            502, "The upstream answered invalid JSON.", code="upstream_error"
        ) from None
    input_tokens, output_tokens = usage_tokens(body.get("usage"))
    state.metrics.record_usage(ROUTES[route].operation, exchange.model, input_tokens, output_tokens)
    state.metrics.genai_duration.labels(ROUTES[route].operation, exchange.model).observe(
        exchange.upstream_seconds
    )
    await exchange.settle(input_tokens + output_tokens)
    if state.guardrails.pii_output != "off" and route != "embedding":
        try:
            if _filter_output(exchange, body):
                raw = orjson.dumps(body)
        except GuardrailViolation as exc:
            end_span(exchange, span, body, None)
            raise GatewayError(502, exc.message, code=exc.code) from None
    output_text = first_text(body) if span is not None else None
    end_span(exchange, span, body, output_text)
    if cache_key is not None:
        with contextlib.suppress(RedisUnavailable):
            await state.cache.set(cache_key, raw)
    if semantic is not None:
        await state.semantic.store_response(semantic[0], semantic[1], semantic[2], raw)
    return Response(raw, media_type="application/json", headers=response_headers(exchange))
