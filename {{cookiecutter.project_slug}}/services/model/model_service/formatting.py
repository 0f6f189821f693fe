"""Generated choices to OpenAI's response and chunk shapes, one class per endpoint.

A formatter turns each choice's deltas into stream chunks (`opening`, `chunk`) and a
finished choice into its response entry (`choice`). Both go through the same tool-call
parser per choice, so a stream always joins to the whole answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model_service import logprobs as lp
from model_service import tools
from model_service.choices import Generated
from model_service.generation import Delta
from model_service.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
)

Decode = Callable[[int], str]


def call_json(call: tools.Call) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


class ChatFormatter:
    def __init__(
        self,
        request_id: str,
        created: int,
        model: str,
        plan: tools.ToolPlan,
        decode: Decode,
        want_logprobs: bool,
    ) -> None:
        self.id, self.created, self.model = request_id, created, model
        self.plan = plan
        self.decode = decode
        self.want_logprobs = want_logprobs
        self._parsers: dict[int, tools.TextParser] = {}

    def choice(self, index: int, generated: Generated) -> ChatChoice:
        parser = tools.parser_for(self.plan)
        parser.feed(generated.text, final=True)
        parsed = parser.parsed
        message = AssistantMessage(
            content=parsed.content if parsed.content or not parsed.calls else None,
            tool_calls=[call_json(c) for c in parsed.calls],
        )
        return ChatChoice(
            index=index,
            message=message,
            logprobs=self._logprobs(generated.logprobs),
            finish_reason=tools.finish_reason(self.plan, parsed, generated.last.finish_reason),  # type: ignore[arg-type]
        )

    def opening(self, index: int) -> ChatCompletionChunk:
        delta = DeltaMessage(role="assistant", content="")
        return self._wrap(ChatChunkChoice(index=index, delta=delta))

    def chunk(self, index: int, delta: Delta) -> ChatCompletionChunk | None:
        parser = self._parsers.setdefault(index, tools.parser_for(self.plan))
        before = (len(parser.parsed.content), [len(c.arguments) for c in parser.parsed.calls])
        parser.feed(delta.text, final=delta.finish_reason is not None)
        content = parser.parsed.content[before[0] :]
        calls = self._call_deltas(parser.parsed.calls, before[1])
        finish = tools.finish_reason(self.plan, parser.parsed, delta.finish_reason)
        logprobs = self._logprobs(delta.logprobs)
        if not (content or calls or finish or logprobs):
            return None
        message = DeltaMessage(content=content or None, tool_calls=calls or None)
        choice = ChatChunkChoice(
            index=index,
            delta=message,
            logprobs=logprobs,
            finish_reason=finish,  # type: ignore[arg-type]
        )
        return self._wrap(choice)

    def _wrap(self, choice: ChatChunkChoice) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[choice]
        )

    @staticmethod
    def _call_deltas(calls: list[tools.Call], sent: list[int]) -> list[dict[str, Any]]:
        """The name and id once (in a call's first chunk), then arguments in pieces."""
        out = []
        for index, call in enumerate(calls):
            if index >= len(sent):
                out.append({"index": index, **call_json(call)})
            elif len(call.arguments) > sent[index]:
                piece = call.arguments[sent[index] :]
                out.append({"index": index, "function": {"arguments": piece}})
        return out

    def _logprobs(self, entries: list[lp.TokenLogprob]) -> dict[str, Any] | None:
        if not self.want_logprobs or not entries:
            return None
        return {"content": lp.chat_content(entries, self.decode)}


class CompletionFormatter:
    def __init__(
        self,
        request_id: str,
        created: int,
        model: str,
        decode: Decode,
        want_logprobs: bool,
        echo: str | None = None,
    ) -> None:
        self.id, self.created, self.model = request_id, created, model
        self.decode = decode
        self.want_logprobs = want_logprobs
        self.echo = echo
        self._offsets: dict[int, int] = {}

    def choice(self, index: int, generated: Generated) -> CompletionChoice:
        prefix = self.echo or ""
        logprobs = None
        if self.want_logprobs:
            logprobs = lp.completion_logprobs(generated.logprobs, self.decode, len(prefix))
        return CompletionChoice(
            index=index,
            text=prefix + generated.text,
            logprobs=logprobs,
            finish_reason=generated.last.finish_reason,  # type: ignore[arg-type]
        )

    def _wrap(self, choice: CompletionChoice) -> CompletionResponse:
        return CompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=[choice]
        )

    def opening(self, index: int) -> CompletionResponse | None:
        if not self.echo:
            return None
        self._offsets[index] = len(self.echo)
        choice = CompletionChoice(index=index, text=self.echo, finish_reason=None)
        return self._wrap(choice)

    def chunk(self, index: int, delta: Delta) -> CompletionResponse | None:
        if not (delta.text or delta.finish_reason or delta.logprobs):
            return None
        logprobs = None
        offset = self._offsets.get(index, 0)
        if self.want_logprobs:
            logprobs = lp.completion_logprobs(delta.logprobs, self.decode, offset)
        self._offsets[index] = offset + sum(len(self.decode(e.token_id)) for e in delta.logprobs)
        choice = CompletionChoice(
            index=index,
            text=delta.text,
            logprobs=logprobs,
            finish_reason=delta.finish_reason,  # type: ignore[arg-type]
        )
        return self._wrap(choice)
