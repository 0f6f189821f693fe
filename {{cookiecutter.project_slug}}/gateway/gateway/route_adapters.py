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

from gateway import request_fields
from gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    map_part_texts,
    message_texts,
    prompt_texts,
)

TextFilter = Callable[[str], str]


@dataclass
class StreamedChoice:
    """What one choice of a streamed completion said so far."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: Any = None  # chat: the `content` entries; completions: lists by name

    @property
    def content(self) -> str:
        return "".join(self.text)


@dataclass
class StreamedAnswer:
    """What a streamed completion said so far (every choice), to cache it and settle usage."""

    choices: dict[int, StreamedChoice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    cacheable: bool = True

    @property
    def content(self) -> str:
        """The first choice's text (for the span and the first-token time)."""
        first = self.choices.get(0)
        return first.content if first is not None else ""

    @property
    def output_chars(self) -> int:
        """Characters of output (text and tool-call arguments), to estimate tokens."""
        return sum(
            len(c.content) + sum(len(t["function"]["arguments"]) for t in c.tool_calls.values())
            for c in self.choices.values()
        )

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
    fields: ClassVar[frozenset[str]]  # the request fields forwarded (request_fields.py)

    def texts(self, payload: dict[str, Any]) -> list[str]:
        return prompt_texts(payload[self.text_field])

    def prompt_count(self, payload: dict[str, Any]) -> int:
        """How many prompts the request holds (a batch gets completions for each)."""
        value = payload[self.text_field]
        if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
            return len(value)
        return 1

    def prompt_token_ids(self, payload: dict[str, Any]) -> int:
        """How many token ids the prompt gives directly (as `[1, 2]` or `[[1], [2]]`)."""
        value = payload[self.text_field]
        if not isinstance(value, list):
            return 0
        return sum(len(v) if isinstance(v, list) else isinstance(v, int) for v in value)

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

    def captured_input(self, payload: dict[str, Any]) -> Any:
        """What a content capture keeps of the request (exchange_log.py)."""
        return payload[self.text_field]

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

    def add_choice(self, state: StreamedChoice, choice: dict[str, Any]) -> bool:
        """Fold one chunk's choice into its state; False when it cannot be cached."""
        raise NotImplementedError

    def add_chunk(self, answer: StreamedAnswer, chunk: dict[str, Any]) -> None:
        answer.response_id = answer.response_id or chunk.get("id")
        answer.model = answer.model or chunk.get("model")
        answer.created = answer.created or chunk.get("created")
        if chunk.get("usage"):
            answer.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            state = answer.choices.setdefault(int(choice.get("index") or 0), StreamedChoice())
            if not self.add_choice(state, choice):
                answer.cacheable = False
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]


class ChatRoute(RouteAdapter):
    name = "chat"
    path = "/chat/completions"
    schema = ChatCompletionRequest
    operation = "chat"
    fields = request_fields.CHAT
    generates = True
    semantic_cacheable = True
    needs_determinism = True
    chunk_object = "chat.completion.chunk"

    def texts(self, payload: dict[str, Any]) -> list[str]:
        messages = payload["messages"]
        return [*message_texts(messages), *_tool_call_texts(messages), *_tool_texts(payload)]

    def prompt_count(self, payload: dict[str, Any]) -> int:
        return 1

    def captured_input(self, payload: dict[str, Any]) -> Any:
        return payload["messages"]

    def prompt_token_ids(self, payload: dict[str, Any]) -> int:
        return 0

    def redact(self, payload: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
        messages = [_redact_message(m, redact) for m in payload["messages"]]
        payload = {**payload, "messages": messages}
        if isinstance(payload.get("tools"), list):
            payload["tools"] = [_redact_tool(tool, redact) for tool in payload["tools"]]
        return payload

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

    def add_choice(self, state: StreamedChoice, choice: dict[str, Any]) -> bool:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            state.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            _merge_tool_call(state.tool_calls, call)
        entries = (choice.get("logprobs") or {}).get("content")
        if entries:
            state.logprobs = [*(state.logprobs or []), *entries]
        return not delta.get("function_call")  # the deprecated form is not replayed

    def response(self, answer: StreamedAnswer) -> dict[str, Any]:
        choices = []
        for index, state in sorted(answer.choices.items()):
            message: dict[str, Any] = {"role": "assistant", "content": state.content}
            if state.tool_calls:
                message["content"] = state.content or None
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            logprobs = {"content": state.logprobs} if state.logprobs else None
            choice = {"index": index, "message": message, "logprobs": logprobs}
            choice["finish_reason"] = state.finish_reason
            choices.append(choice)
        response = {**answer.meta(), "object": "chat.completion", "choices": choices}
        return _with_usage(response, answer)

    def replay_chunks(self, response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        common = {**_meta(response), "object": self.chunk_object}
        for position, choice in enumerate(response.get("choices") or [{}]):
            index = choice.get("index", position)
            message = choice.get("message") or {}
            yield _chat_chunk(common, index, {"role": "assistant", "content": ""})
            entries = (choice.get("logprobs") or {}).get("content")
            for piece, logprobs in _pieces_with_logprobs(message.get("content") or "", entries):
                lp = {"content": logprobs} if logprobs else None
                yield _chat_chunk(common, index, {"content": piece}, logprobs=lp)
            for number, call in enumerate(message.get("tool_calls") or ()):
                yield _chat_chunk(common, index, {"tool_calls": [{"index": number, **call}]})
            finish = choice.get("finish_reason") or "stop"
            yield _chat_chunk(common, index, {}, finish=finish)


class CompletionRoute(RouteAdapter):
    name = "completion"
    path = "/completions"
    schema = CompletionRequest
    operation = "text_completion"
    fields = request_fields.COMPLETION
    generates = True
    needs_determinism = True
    text_field = "prompt"

    def texts(self, payload: dict[str, Any]) -> list[str]:
        suffix = payload.get("suffix")  # the model reads it after the prompt
        return [*super().texts(payload), *([suffix] if isinstance(suffix, str) else [])]

    def redact(self, payload: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
        payload = super().redact(payload, redact)
        if isinstance(payload.get("suffix"), str):
            payload["suffix"] = redact(payload["suffix"])
        return payload

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

    def add_choice(self, state: StreamedChoice, choice: dict[str, Any]) -> bool:
        if choice.get("text"):
            state.text.append(choice["text"])
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = state.logprobs or {}
            for name, values in logprobs.items():
                merged[name] = [*(merged.get(name) or []), *(values or [])]
            state.logprobs = merged
        return True

    def response(self, answer: StreamedAnswer) -> dict[str, Any]:
        choices = [
            {
                "index": index,
                "text": state.content,
                "logprobs": state.logprobs,
                "finish_reason": state.finish_reason,
            }
            for index, state in sorted(answer.choices.items())
        ]
        response = {**answer.meta(), "object": "text_completion", "choices": choices}
        return _with_usage(response, answer)

    def replay_chunks(self, response: dict[str, Any]) -> Iterator[dict[str, Any]]:
        common = {**_meta(response), "object": "text_completion"}
        for position, choice in enumerate(response.get("choices") or [{}]):
            index = choice.get("index", position)
            text, logprobs = choice.get("text") or "", choice.get("logprobs")
            # With logprobs the text goes in one piece, so the lists stay aligned with it.
            for piece in [text] if logprobs else word_pieces(text):
                yield _text_chunk(common, index, piece, logprobs=logprobs)
            yield _text_chunk(common, index, "", finish=choice.get("finish_reason") or "stop")


class EmbeddingRoute(RouteAdapter):
    name = "embedding"
    path = "/embeddings"
    schema = EmbeddingRequest
    operation = "embeddings"
    fields = request_fields.EMBEDDING


CHAT = ChatRoute()
COMPLETION = CompletionRoute()
EMBEDDING = EmbeddingRoute()
ROUTES: dict[str, RouteAdapter] = {route.name: route for route in (CHAT, COMPLETION, EMBEDDING)}


def _redact_message(message: dict[str, Any], redact: TextFilter) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        message = {**message, "content": redact(content)}
    elif isinstance(content, list):
        message = {**message, "content": map_part_texts(content, redact)}
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message = {**message, "tool_calls": [_redact_tool_call(c, redact) for c in calls]}
    return message


# Tools: the chat template renders each tool's whole `function` (name, description,
# parameter schema with its descriptions and enums) and each assistant tool call's
# name and arguments into the prompt, so the guardrails read all of those strings.
def _tool_texts(payload: dict[str, Any]) -> list[str]:
    tools = payload.get("tools")
    if not isinstance(tools, list):
        return []
    return [text for tool in tools for text in _strings_in(_function_of(tool))]


def _tool_call_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts = []
    for message in messages:
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = _function_of(call)
            texts += [
                function[k] for k in ("name", "arguments") if isinstance(function.get(k), str)
            ]
    return texts


def _function_of(item: Any) -> dict[str, Any]:
    function = item.get("function") if isinstance(item, dict) else None
    return function if isinstance(function, dict) else {}


def _redact_tool(tool: Any, redact: TextFilter) -> Any:
    if not _function_of(tool):
        return tool
    return {**tool, "function": _map_strings(tool["function"], redact)}


def _redact_tool_call(call: Any, redact: TextFilter) -> Any:
    function = _function_of(call)
    if not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": redact(function["arguments"])}}


def _strings_in(value: Any) -> Iterator[str]:
    """Every string value inside a JSON value (not the object keys)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


def _map_strings(value: Any, change: TextFilter) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    return value


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


def _chat_chunk(
    common: dict[str, Any],
    index: int,
    delta: dict[str, Any],
    finish: str | None = None,
    logprobs: Any = None,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return {**common, "choices": [choice]}


def _text_chunk(
    common: dict[str, Any], index: int, text: str, finish: str | None = None, logprobs: Any = None
) -> dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return {**common, "choices": [choice]}


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """Fold a streamed tool-call fragment into the call it continues (by index)."""
    call = calls.setdefault(
        int(delta.get("index") or 0),
        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
    )
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


def _pieces_with_logprobs(text: str, entries: list[Any] | None) -> Iterator[tuple[str, Any]]:
    """Replay pieces: one per token when the logprob tokens spell the text, so each
    chunk carries its own token's logprobs; else word pieces (logprobs on the first)."""
    if entries and "".join(str(e.get("token", "")) for e in entries) == text:
        for entry in entries:
            yield str(entry["token"]), [entry]
        return
    for position, piece in enumerate(word_pieces(text)):
        yield piece, (entries if position == 0 else None)


def word_pieces(text: str) -> Iterator[str]:
    """Split text into word-sized pieces, like a model streams it."""
    start = 0
    for index in range(1, len(text)):
        if text[index] == " " and text[index - 1] != " ":
            yield text[start:index]
            start = index
    if start < len(text):
        yield text[start:]
