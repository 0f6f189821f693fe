"""Relaying a live upstream stream: pass SSE events on as they arrive, apply output
guardrails across chunks, turn a broken stream into an error event, hide the usage
chunk the client did not ask for, and close the exchange once at the end.

`open_stream` returns a `StreamAnswer` whose `events` iterator is already started, so
its one `finally` runs however the stream ends: completed, broken, or closed by a
client that left (even before the first event was sent).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson

from gateway import sse
from gateway.errors import error_body
from gateway.exchange import Exchange, Outcome, estimate_tokens, usage_tokens
from gateway.guardrails import Guardrails, GuardrailViolation, OutputStreamFilter
from gateway.route_adapters import StreamedAnswer
from gateway.upstreams import UpstreamCall

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass
class StreamAnswer:
    """A streamed response: headers now, SSE events as they come."""

    headers: dict[str, str]
    events: AsyncIterator[bytes]


async def open_stream(
    exchange: Exchange, call: UpstreamCall, include_usage: bool, guardrails: Guardrails
) -> StreamAnswer:
    # Overhead of a stream: everything before the upstream call started.
    exchange.upstream_seconds = time.perf_counter() - call.started
    relay = StreamRelay(exchange, call, include_usage, guardrails)
    events = relay.events()
    await events.__anext__()  # start it, so closing it always runs its `finally`
    return StreamAnswer({**exchange.response_headers(), **STREAM_HEADERS}, events)


class StreamRelay:
    def __init__(
        self,
        exchange: Exchange,
        call: UpstreamCall,
        include_usage: bool,
        guardrails: Guardrails,
    ) -> None:
        self.exchange = exchange
        self.route = exchange.route
        self.call = call
        self.include_usage = include_usage
        self.guardrails = guardrails
        self.filters: dict[int, OutputStreamFilter] | None = (
            {} if guardrails.pii_output != "off" else None
        )
        self.answer = StreamedAnswer()
        self.completed = False
        self.first_token_seen = False
        self.status = 499  # until the relay ends by itself: the client went away

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield b""  # taken by open_stream
            async for event in self._relay():
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await self.call.aclose()
                await self.exchange.close(self.status, self._outcome())

    async def _relay(self) -> AsyncIterator[bytes]:
        error: str | None = None
        try:
            async for event in self._upstream_events():
                yield event
            if not self.completed and self.status != 502:
                error = "The upstream stream ended before it was complete."
        except httpx.TimeoutException:
            error = "The upstream stopped sending (read timeout)."
        except httpx.HTTPError as exc:
            error = f"The upstream connection broke mid-stream ({type(exc).__name__})."
        except GuardrailViolation as exc:
            error = exc.message
        if error is not None or self.status == 502:
            self.status = 502
            self.exchange.books.metrics.upstream_errors.labels(
                self.call.upstream.name, "stream_interrupted"
            ).inc()
            if error is not None:
                payload = error_body(error, "upstream_error", code="stream_interrupted")
                yield sse.format_event(orjson.dumps(payload))
            return
        self.status = 200
        yield sse.format_event(sse.DONE)

    async def _upstream_events(self) -> AsyncIterator[bytes]:
        """The upstream's events as the client should see them, until [DONE]."""
        async for event in sse.iter_events(self.call.response.aiter_raw()):
            data = sse.event_data(event)
            if data is None:
                continue
            if data == sse.DONE:
                self.completed = True
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                yield sse.format_event(data)
                continue
            if isinstance(chunk, dict) and "error" in chunk:
                self.status = 502  # relayed as the upstream sent it
                yield sse.format_event(data)
                return
            relayed = self._relay_chunk(chunk, data)
            if relayed is not None:
                yield sse.format_event(relayed)
        if self.completed and self.filters:
            for tail in self._held_back_text():
                yield sse.format_event(orjson.dumps(tail))

    def _relay_chunk(self, chunk: dict[str, Any], data: bytes) -> bytes | None:
        """The chunk's bytes as relayed (filtered, usage hidden), None to drop it."""
        if self.filters is not None and self._filter_chunk(chunk):
            data = orjson.dumps(chunk)
        self.route.add_chunk(
            self.answer, chunk
        )  # after filtering: the cache keeps what clients saw
        if not self.first_token_seen and self.answer.output_chars:
            self.first_token_seen = True
            exchange = self.exchange
            exchange.books.metrics.ttft.labels(exchange.model).observe(
                time.perf_counter() - exchange.started
            )
        if chunk.get("usage") and not self.include_usage:
            if not chunk.get("choices"):
                return None
            chunk["usage"] = None
            data = orjson.dumps(chunk)
        return data

    def _filter_chunk(self, chunk: dict[str, Any]) -> bool:
        """Run each choice's text through its stream filter (held back until entities are
        whole, released at the choice's finish); True when the chunk changed."""
        assert self.filters is not None
        changed = False
        for choice in chunk.get("choices") or ():
            holder, key = self.route.chunk_holder(choice)
            if holder is None:
                continue
            stream_filter = self.filters.setdefault(
                int(choice.get("index") or 0), OutputStreamFilter(self.guardrails)
            )
            original = holder.get(key)
            text = stream_filter.feed(original) if isinstance(original, str) else ""
            if choice.get("finish_reason"):
                text += stream_filter.flush()
            if isinstance(original, str) or text:
                changed |= text != original
                holder[key] = text
        return changed

    def _held_back_text(self) -> list[dict[str, Any]]:
        """Chunks with text still held back when the upstream sent no finish chunk."""
        assert self.filters is not None
        tails = []
        for index, stream_filter in self.filters.items():
            leftover = stream_filter.flush()
            if leftover:
                tail = self.route.text_chunk(self.answer, index, leftover)
                self.route.add_chunk(self.answer, tail)
                tails.append(tail)
        return tails

    def _outcome(self) -> Outcome:
        answer = self.answer
        input_tokens, output_tokens = usage_tokens(answer.usage)
        charged = None
        if not answer.usage:
            # Ended early (client left, upstream broke): charge the prompt as admitted
            # plus what was streamed so far, never nothing.
            output_tokens = estimate_tokens(answer.output_chars)
            charged = self.exchange.prompt_estimate + output_tokens
        response = self.route.response(answer)
        complete = self.completed and answer.cacheable and self.status == 200
        return Outcome(
            charged=charged,
            usage=(input_tokens, output_tokens),
            upstream_seconds=time.perf_counter() - self.exchange.started,
            body=response,
            output_text=answer.content,
            cache_body=orjson.dumps(response) if complete else None,
        )
