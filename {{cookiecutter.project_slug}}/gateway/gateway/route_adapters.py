"""What differs between the OpenAI routes, in one class per route.

A route adapter knows its upstream path, request schema and GenAI operation name, the
texts a guardrail must see and how to redact them, how to filter the output of a JSON
answer or a stream chunk, how a streamed answer assembles into one response (for the
cache) and how a cached response replays as chunks. This is the only module that
tells routes apart; adding a route is one class here and one line in `ROUTES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    message_texts,
    prompt_texts,
)

TextFilter = Callable[[str], str]


@dataclass
class StreamedAnswer:
    """What a streamed completion said so far (choice 0), to cache it and settle usage."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    cacheable: bool = True

    @property
    def content(self) -> str:
        return "".join(self.text)

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.response_id or "cached",
            "created": self.created or int(time.time()),
            "model": self.model,
        }


class RouteAdapter:
    """The behaviour one OpenAI route adds to the shared pipeline (defaults: embeddings)."""

    name: ClassVar[str]  # metric label and cache namespace
    path: ClassVar[str]  # upstream path under /v1
    schema: ClassVar[type[BaseModel]]
    operation: ClassVar[str]  # GenAI operation name
    generates: ClassVar[bool] = False  # has max_tokens, streaming and output text
    semantic_cacheable: ClassVar[bool] = False
    needs_determinism: ClassVar[bool] = False  # exact cache only for deterministic requests
    text_field: ClassVar[str] = "input"

    def texts(self, payload: dict[str, Any]) -> list[str]:
        return prompt_texts(payload[self.text_field])

    def redact(self, payload: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
        value = payload[self.text_field]
        if isinstance(value, str):
            value = redact(value)
        elif isinstance(value, list):
            value = [redact(v) if isinstance(v, str) else v for v in value]
        return {**payload, self.text_field: value}

    def filter_output(self, body: dict[str, Any], filter_text: TextFilter) -> bool:
        """Apply `filter_text` to each choice's text; True when something changed."""
        return False

    def first_text(self, body: dict[str, Any]) -> str | None:
        return None

    # Streaming (only routes that generate) ---------------------------------------------
    def chunk_holder(self, choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The dict inside a stream chunk's choice that holds its text, and the text's key."""
        raise NotImplementedError

    def text_chunk(self, answer: StreamedAnswer, index: int, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def response(self, answer: StreamedAnswer) -> dict[str, Any]:
        """The non-streaming response a stream amounts to."""
        raise NotImplementedError

    def replay_chunks(self, response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Stream chunks saying what a cached response says."""
        raise NotImplementedError

    def add_chunk(self, answer: StreamedAnswer, chunk: dict[str, Any]) -> None:
        answer.response_id = answer.response_id or chunk.get("id")
        answer.model = answer.model or chunk.get("model")
        answer.created = answer.created or chunk.get("created")
        if chunk.get("usage"):
            answer.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                answer.cacheable = False
                continue
            holder, key = self.chunk_holder(choice)
            holder = holder or {}
            if holder.get("tool_calls") or holder.get("function_call"):
                answer.cacheable = False
            content = holder.get(key)
            if content:
                answer.text.append(content)
            if choice.get("finish_reason"):
                answer.finish_reason = choice["finish_reason"]


class ChatRoute(RouteAdapter):
    name = "chat"
    path = "/chat/completions"
    schema = ChatCompletionRequest
    operation = "chat"
    generates = True
    semantic_cacheable = True
    needs_determinism = True
    chunk_object = "chat.completion.chunk"

    def texts(self, payload: dict[str, Any]) -> list[str]:
        return message_texts(payload["messages"])

    def redact(self, payload: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
        return {**payload, "messages": [_redact_message(m, redact) for m in payload["messages"]]}

    def filter_output(self, body: dict[str, Any], filter_text: TextFilter) -> bool:
        changed = False
        for choice in body.get("choices") or ():
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                filtered = filter_text(message["content"])
                changed |= filtered != message["content"]
                message["content"] = filtered
        return changed

    def first_text(self, body: dict[str, Any]) -> str | None:
        message = ((body.get("choices") or [{}])[0]).get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None

    def chunk_holder(self, choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        delta = choice.get("delta")
        return (delta if isinstance(delta, dict) else None), "content"

    def text_chunk(self, answer: StreamedAnswer, index: int, text: str) -> dict[str, Any]:
        choice = {"index": index, "delta": {"content": text}, "finish_reason": None}
        return {**answer.meta(), "object": self.chunk_object, "choices": [choice]}

    def response(self, answer: StreamedAnswer) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer.content}
        choice = {"index": 0, "message": message, "logprobs": None}
        choice["finish_reason"] = answer.finish_reason
        return _with_usage(
            {**answer.meta(), "object": "chat.completion", "choices": [choice]}, answer
        )

    def replay_chunks(self, response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        common = {**_meta(response), "object": self.chunk_object}
        choice = (response.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            replayed = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**common, "choices": [replayed]}

        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in word_pieces(text):
            yield chunk({"content": piece}, None)
        yield chunk({}, choice.get("finish_reason") or "stop")


class CompletionRoute(RouteAdapter):
    name = "completion"
    path = "/completions"
    schema = CompletionRequest
    operation = "text_completion"
    generates = True
    needs_determinism = True
    text_field = "prompt"

    def filter_output(self, body: dict[str, Any], filter_text: TextFilter) -> bool:
        changed = False
        for choice in body.get("choices") or ():
            if isinstance(choice.get("text"), str):
                filtered = filter_text(choice["text"])
                changed |= filtered != choice["text"]
                choice["text"] = filtered
        return changed

    def first_text(self, body: dict[str, Any]) -> str | None:
        text = ((body.get("choices") or [{}])[0]).get("text")
        return text if isinstance(text, str) else None

    def chunk_holder(self, choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        return choice, "text"

    def text_chunk(self, answer: StreamedAnswer, index: int, text: str) -> dict[str, Any]:
        choice = {"index": index, "text": text, "finish_reason": None}
        return {**answer.meta(), "object": "text_completion", "choices": [choice]}

    def response(self, answer: StreamedAnswer) -> dict[str, Any]:
        choice = {"index": 0, "text": answer.content, "logprobs": None}
        choice["finish_reason"] = answer.finish_reason
        return _with_usage(
            {**answer.meta(), "object": "text_completion", "choices": [choice]}, answer
        )

    def replay_chunks(self, response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        common = {**_meta(response), "object": "text_completion"}
        choice = (response.get("choices") or [{}])[0]

        def chunk(piece: str, finish: str | None) -> dict[str, Any]:
            replayed = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
            return {**common, "choices": [replayed]}

        for piece in word_pieces(choice.get("text") or ""):
            yield chunk(piece, None)
        yield chunk("", choice.get("finish_reason") or "stop")


class EmbeddingRoute(RouteAdapter):
    name = "embedding"
    path = "/embeddings"
    schema = EmbeddingRequest
    operation = "embeddings"


CHAT = ChatRoute()
COMPLETION = CompletionRoute()
EMBEDDING = EmbeddingRoute()
ROUTES: dict[str, RouteAdapter] = {route.name: route for route in (CHAT, COMPLETION, EMBEDDING)}


def _redact_message(message: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": redact(content)}
    if isinstance(content, list):
        parts = [
            {**p, "text": redact(p["text"])}
            if isinstance(p, dict) and isinstance(p.get("text"), str)
            else p
            for p in content
        ]
        return {**message, "content": parts}
    return message


def _meta(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": response.get("id", "cached"),
        "created": response.get("created", int(time.time())),
        "model": response.get("model"),
    }


def _with_usage(response: dict[str, Any], answer: StreamedAnswer) -> dict[str, Any]:
    if answer.usage:
        response["usage"] = answer.usage
    return response


def word_pieces(text: str) -> Iterator[str]:
    """Split text into word-sized pieces, like a model streams it."""
    start = 0
    for index in range(1, len(text)):
        if text[index] == " " and text[index - 1] != " ":
            yield text[start:index]
            start = index
    if start < len(text):
        yield text[start:]
