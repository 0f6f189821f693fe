"""Server-sent events: split an upstream byte stream into events, assemble a
streamed completion into one response (for the cache), and replay a cached
response as chunks in the same format as the upstream's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].lstrip(b" ") for line in lines)


def format_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


@dataclass
class StreamAssembler:
    """Collects what a streamed completion said, to cache it and to settle usage."""

    kind: str  # "chat" | "completion"
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    cacheable: bool = True

    def add(self, chunk: dict[str, Any]) -> None:
        self.response_id = self.response_id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                self.cacheable = False
                continue
            if self.kind == "chat":
                delta = choice.get("delta") or {}
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.cacheable = False
                content = delta.get("content")
            else:
                content = choice.get("text")
            if content:
                self.text.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    @property
    def content(self) -> str:
        return "".join(self.text)

    def response(self) -> dict[str, Any]:
        """The non-streaming response this stream amounts to."""
        base: dict[str, Any] = {
            "id": self.response_id or "cached",
            "created": self.created or int(time.time()),
            "model": self.model,
        }
        if self.kind == "chat":
            base["object"] = "chat.completion"
            base["choices"] = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ]
        else:
            base["object"] = "text_completion"
            base["choices"] = [
                {
                    "index": 0,
                    "text": self.content,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ]
        if self.usage:
            base["usage"] = self.usage
        return base


def _pieces(text: str) -> Iterator[str]:
    """Split text into word-sized pieces, like a model streams it."""
    start = 0
    for index in range(1, len(text)):
        if text[index] == " " and text[index - 1] != " ":
            yield text[start:index]
            start = index
    if start < len(text):
        yield text[start:]


def replay(response: dict[str, Any], kind: str, include_usage: bool) -> Iterator[bytes]:
    """SSE events for a cached (non-streaming) response; the text is the same."""
    common = {
        "id": response.get("id", "cached"),
        "created": response.get("created", int(time.time())),
        "model": response.get("model"),
    }
    choice = (response.get("choices") or [{}])[0]
    if kind == "chat":
        common["object"] = "chat.completion.chunk"
        text = (choice.get("message") or {}).get("content") or ""

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                **common,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        yield format_event(orjson.dumps(chunk({"role": "assistant", "content": ""}, None)))
        for piece in _pieces(text):
            yield format_event(orjson.dumps(chunk({"content": piece}, None)))
        yield format_event(orjson.dumps(chunk({}, choice.get("finish_reason") or "stop")))
    else:
        common["object"] = "text_completion"
        text = choice.get("text") or ""

        def text_chunk(piece: str, finish: str | None) -> dict[str, Any]:
            return {
                **common,
                "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}],
            }

        for piece in _pieces(text):
            yield format_event(orjson.dumps(text_chunk(piece, None)))
        yield format_event(orjson.dumps(text_chunk("", choice.get("finish_reason") or "stop")))
    if include_usage:
        usage = response.get("usage") or {}
        yield format_event(orjson.dumps({**common, "choices": [], "usage": usage}))
    yield format_event(DONE)
