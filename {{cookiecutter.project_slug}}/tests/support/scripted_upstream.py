"""A scripted OpenAI-compatible upstream as an in-process ASGI app, for the gateway's
fast pipeline tests: `httpx.ASGITransport(app=ScriptedUpstream())` becomes the
upstreams' transport (`GatewayState(settings, upstream_transport=...)`), so no socket
and no process is involved. It records every request and answers with fixed words;
a chat request with `tools` gets a tool call, `logprobs: true` gets per-token logprobs,
and `n` choices come back for `n`. `listing` is what it answers on `GET /v1/models`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

WORDS = ["Hello", " from", " the", " scripted", " upstream"]


class ScriptedUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, in order
        self.status = 200  # what the next answers use
        self.listing: bytes | None = None  # the body of GET /v1/models (None: 404)
        self.app = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completion, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        body: dict[str, Any] = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.status != 200:
            error = {"error": {"message": "scripted refusal", "type": "invalid_request_error"}}
            return Response(orjson.dumps(error), status_code=self.status)
        return body

    async def _models(self, _: Request) -> Response:
        if self.listing is None:
            return Response(b'{"error": {"message": "not found"}}', status_code=404)
        return Response(self.listing, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if body.get("stream"):
            return _stream(body, chat=True)
        choices = [_chat_choice(body, i) for i in range(int(body.get("n") or 1))]
        return _json({**_common(body, "chat.completion"), "choices": choices, "usage": USAGE})

    async def _completion(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if body.get("stream"):
            return _stream(body, chat=False)
        choice = {"index": 0, "text": "".join(WORDS), "finish_reason": "stop"}
        return _json({**_common(body, "text_completion"), "choices": [choice], "usage": USAGE})

    async def _embeddings(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]}
            for i, t in enumerate(texts)
        ]
        return _json({"object": "list", "data": data, "model": body["model"], "usage": USAGE})


USAGE = {"prompt_tokens": 3, "completion_tokens": len(WORDS), "total_tokens": 3 + len(WORDS)}


TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def _logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


def _chat_choice(body: dict[str, Any], index: int) -> dict[str, Any]:
    if body.get("tools"):
        message = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    message = {"role": "assistant", "content": "".join(WORDS)}
    logprobs = {"content": [_logprob(w) for w in WORDS]} if body.get("logprobs") else None
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": "stop"}


def _common(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"id": "scripted-1", "object": kind, "created": 1, "model": body["model"]}


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _stream(body: dict[str, Any], chat: bool) -> StreamingResponse:
    kind = "chat.completion.chunk" if chat else "text_completion"
    include_usage = (body.get("stream_options") or {}).get("include_usage")

    def event(index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": index, "finish_reason": finish}
        if chat:
            choice["delta"] = delta
            if body.get("logprobs") and delta.get("content"):
                choice["logprobs"] = {"content": [_logprob(delta["content"])]}
        else:
            choice["text"] = delta.get("content", "")
        return b"data: " + orjson.dumps({**_common(body, kind), "choices": [choice]}) + b"\n\n"

    def tool_call_events(index: int) -> list[bytes]:
        name, arguments = TOOL_CALL["function"]["name"], TOOL_CALL["function"]["arguments"]
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name}}
        halves = (arguments[:8], arguments[8:])
        rest = [{"index": 0, "function": {"arguments": half}} for half in halves]
        return [event(index, {"tool_calls": [call]}, None) for call in (first, *rest)]

    async def events() -> AsyncIterator[bytes]:
        for index in range(int(body.get("n") or 1)):
            if chat and body.get("tools"):
                for tool_event in tool_call_events(index):
                    yield tool_event
                yield event(index, {}, "tool_calls")
                continue
            for word in WORDS:
                yield event(index, {"content": word}, None)
            yield event(index, {}, "stop")
        if include_usage:
            usage = {**_common(body, kind), "choices": [], "usage": USAGE}
            yield b"data: " + orjson.dumps(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
