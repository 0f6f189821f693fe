"""Server-sent events framing: split an upstream byte stream into events, read an
event's data, write an event, and frame a replayed (cached) answer as events.
Relaying a live stream is `stream_relay.py`; what a chunk holds is the route adapter's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from gateway.route_adapters import RouteAdapter

DONE = b"[DONE]"


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each event's raw text (without the blank line) as soon as it completes."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            event, buffer = buffer[:end], buffer[end + 2 :]
            if event:
                yield event
    if buffer.strip():
        yield buffer.strip()


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of an event (multi-line data joined), None for comments."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")  # the common case: one data line
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].lstrip(b" ") for line in lines)


def format_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def replay(route: RouteAdapter, response: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """SSE events for a cached (non-streaming) response; the text is the same."""
    last: dict[str, Any] = {}
    for chunk in route.replay_chunks(response):
        last = chunk
        yield format_event(orjson.dumps(chunk))
    if include_usage:
        common = {k: last.get(k) for k in ("id", "object", "created", "model")}
        usage = response.get("usage") or {}
        yield format_event(orjson.dumps({**common, "choices": [], "usage": usage}))
    yield format_event(DONE)
