"""Streaming responses: relay upstream SSE events as they arrive, apply output
guardrails across chunks, surface a broken stream as an error event, cancel the
upstream when the client leaves, then settle tokens and fill the caches."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import orjson
from opentelemetry.trace import Span
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import sse
from gateway.errors import error_body
from gateway.exchange import (
    ROUTES,
    Exchange,
    Route,
    estimate_tokens,
    response_headers,
    usage_tokens,
)
from gateway.genai_spans import end_span
from gateway.guardrails import GuardrailViolation, OutputStreamFilter
from gateway.redis_store import RedisUnavailable
from gateway.router import UpstreamCall


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once (not only on the
    next write) and always closes its body iterator, which closes the upstream call.
    `finalizer` runs last in every case (also when the body never started)."""

    finalizer: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # client went away mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            with anyio.CancelScope(shield=True):
                if closer is not None:
                    await closer()
                if self.finalizer is not None:
                    await self.finalizer()


def relay_response(
    exchange: Exchange,
    call: UpstreamCall,
    span: Span | None,
    cache_key: str | None,
    semantic: tuple[str, str, list[float]] | None,
    include_usage: bool,
) -> SSEResponse:
    # Overhead of a stream: everything before the upstream call started.
    exchange.upstream_seconds = time.perf_counter() - call.started
    headers = {
        **response_headers(exchange),
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    response = SSEResponse(
        _relay(exchange, call, span, cache_key, semantic, include_usage),
        media_type="text/event-stream",
        headers=headers,
    )

    async def finalize() -> None:
        # Only does something when the relay never ran (client gone before the body).
        await call.aclose()
        if not exchange.finished:
            await exchange.settle(0)
            if span is not None:
                span.end()
            exchange.finish(499)

    response.finalizer = finalize
    return response


async def _relay(
    exchange: Exchange,
    call: UpstreamCall,
    span: Span | None,
    cache_key: str | None,
    semantic: tuple[str, str, list[float]] | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    state = exchange.state
    route = exchange.route
    assembler = sse.StreamAssembler("chat" if route == "chat" else "completion")
    filters: dict[int, OutputStreamFilter] | None = (
        {} if state.guardrails.pii_output != "off" else None
    )
    first_token_seen = False
    completed = False
    status = 200
    try:
        error: str | None = None
        try:
            async for event in sse.iter_events(call.response.aiter_raw()):
                data = sse.event_data(event)
                if data is None:
                    continue
                if data == sse.DONE:
                    completed = True
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    yield sse.format_event(data)
                    continue
                if isinstance(chunk, dict) and "error" in chunk:
                    error = "upstream_error"
                    yield sse.format_event(data)
                    break
                if filters is not None and _filter_stream_chunk(exchange, chunk, filters):
                    data = orjson.dumps(chunk)
                assembler.add(chunk)  # after filtering: the cache keeps what clients saw
                if not first_token_seen and assembler.text:
                    first_token_seen = True
                    state.metrics.ttft.labels(exchange.model).observe(
                        time.perf_counter() - exchange.started
                    )
                if chunk.get("usage") and not include_usage:
                    if not chunk.get("choices"):
                        continue
                    chunk["usage"] = None
                    data = orjson.dumps(chunk)
                yield sse.format_event(data)
            if completed and filters:
                for index, stream_filter in filters.items():
                    # Text still held back when the upstream sent no finish chunk.
                    leftover = stream_filter.flush()
                    if leftover:
                        tail = _text_chunk(exchange.route, assembler, index, leftover)
                        assembler.add(tail)
                        yield sse.format_event(orjson.dumps(tail))
            if not completed and error is None:
                error = "The upstream stream ended before it was complete."
        except httpx.TimeoutException:
            error = "The upstream stopped sending (read timeout)."
        except httpx.HTTPError as exc:
            error = f"The upstream connection broke mid-stream ({type(exc).__name__})."
        except GuardrailViolation as exc:
            error = exc.message
        if error is not None:
            status = 502
            state.metrics.upstream_errors.labels(call.upstream.name, "stream_interrupted").inc()
            if error != "upstream_error":
                payload = error_body(error, "upstream_error", code="stream_interrupted")
                yield sse.format_event(orjson.dumps(payload))
            return
        yield sse.format_event(sse.DONE)
    except BaseException:
        status = 499  # cancelled: the client went away
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await call.aclose()
            await _after_stream(exchange, assembler, span, cache_key, semantic, completed, status)


def _text_chunk(
    route: Route, assembler: sse.StreamAssembler, index: int, text: str
) -> dict[str, Any]:
    choice: dict[str, Any] = (
        {"index": index, "delta": {"content": text}, "finish_reason": None}
        if route == "chat"
        else {"index": index, "text": text, "finish_reason": None}
    )
    return {
        "id": assembler.response_id,
        "object": "chat.completion.chunk" if route == "chat" else "text_completion",
        "created": assembler.created,
        "model": assembler.model,
        "choices": [choice],
    }


def _filter_stream_chunk(
    exchange: Exchange, chunk: dict[str, Any], filters: dict[int, OutputStreamFilter]
) -> bool:
    """Run each choice's text through its stream filter (held back until entities are
    whole, released at the choice's finish); True when the chunk changed."""
    changed = False
    key = "content" if exchange.route == "chat" else "text"
    for choice in chunk.get("choices") or ():
        holder = choice.get("delta") if exchange.route == "chat" else choice
        if not isinstance(holder, dict):
            continue
        stream_filter = filters.setdefault(
            int(choice.get("index") or 0), OutputStreamFilter(exchange.state.guardrails)
        )
        original = holder.get(key)
        text = stream_filter.feed(original) if isinstance(original, str) else ""
        if choice.get("finish_reason"):
            text += stream_filter.flush()
        if isinstance(original, str) or text:
            changed |= text != original
            holder[key] = text
    return changed


async def _after_stream(
    exchange: Exchange,
    assembler: sse.StreamAssembler,
    span: Span | None,
    cache_key: str | None,
    semantic: tuple[str, str, list[float]] | None,
    completed: bool,
    status: int,
) -> None:
    state = exchange.state
    input_tokens, output_tokens = usage_tokens(assembler.usage)
    if not assembler.usage:
        output_tokens = estimate_tokens(len(assembler.content))
    operation = ROUTES[exchange.route].operation
    state.metrics.record_usage(operation, exchange.model, input_tokens, output_tokens)
    state.metrics.genai_duration.labels(operation, exchange.model).observe(
        time.perf_counter() - exchange.started
    )
    await exchange.settle(input_tokens + output_tokens)
    response = assembler.response()
    end_span(exchange, span, response, assembler.content)
    if completed and assembler.cacheable and status == 200:
        body = orjson.dumps(response)
        if cache_key is not None:
            with contextlib.suppress(RedisUnavailable):
                await state.cache.set(cache_key, body)
        if semantic is not None:
            await state.semantic.store_response(semantic[0], semantic[1], semantic[2], body)
    exchange.finish(status)
