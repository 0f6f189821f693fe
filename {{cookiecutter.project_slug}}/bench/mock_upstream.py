"""A fast, scriptable OpenAI-compatible upstream for benchmarks and fault tests.

Run: `python bench/mock_upstream.py --port 9000 [--model NAME ...] [--chunks 8]
[--chunk-delay-ms 0]`. It answers `/v1/chat/completions`, `/v1/completions` (JSON or
SSE), `/v1/embeddings` (a deterministic bag-of-words vector), `/v1/models`, `/health`.

Behaviour can be switched at run time for fault tests with `POST /_control`
(`{"mode": "ok"|"cut"|"slow"|"fail"|"reject"|"unauthorized"}`): `cut` drops the
connection after two chunks, `slow` streams one chunk every `--chunk-delay-ms` (default
200 ms in that mode) for 100 chunks, `fail` answers 503, `reject` 400 and
`unauthorized` 401 with an error that quotes the request's `authorization` header.
`GET /_stats` reports requests received, streams completed and streams cancelled by the
client; `GET /_last` returns the last request body (to check pass-through of unknown fields).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

WORDS = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while"]
EMBED_DIMS = 64


class MockState:
    def __init__(self, models: list[str], chunks: int, chunk_delay: float) -> None:
        self.models = models
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.mode = "ok"
        self.requests = 0
        self.completed = 0
        self.cancelled = 0
        self.last: dict[str, Any] | None = None


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        contents = [m.get("content") for m in body["messages"]]
        return " ".join(c for c in contents if isinstance(c, str))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def _answer_words(body: dict[str, Any], limit: int) -> list[str]:
    # "ECHO: text" answers with that text, "(at)" turned into "@" (to test output
    # guardrails without PII in the prompt); otherwise the
    # answer is deterministic for a given prompt, so cache tests can compare answers.
    prompt = _prompt_text(body)
    if "ECHO:" in prompt:
        return prompt.split("ECHO:", 1)[1].replace("(at)", "@").split()[:limit]
    seed = int(hashlib.sha256(_prompt_text(body).encode()).hexdigest()[:8], 16)
    return [WORDS[(seed + i) % len(WORDS)] for i in range(limit)]


def embed(text: str) -> list[float]:
    """Hashed bag of words, L2-normalised: same words → same vector."""
    vector = [0.0] * EMBED_DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % EMBED_DIMS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _rejection(request: Request, mode: str) -> Response:
    """A provider's 4xx that quotes the caller's credentials, as some providers do."""
    auth = request.headers.get("authorization", "")
    status = 400 if mode == "reject" else 401
    error = {
        "message": f"Bad request for {auth}; key {auth.removeprefix('Bearer ')} is fine",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "provider_says_no",
        "echo_headers": dict(request.headers),
    }
    return _json({"error": error, "request_headers": dict(request.headers)}, status)


def build_app(state: MockState) -> Starlette:
    async def generate(request: Request) -> Response:
        state.requests += 1
        body = orjson.loads(await request.body())
        state.last = body
        if state.mode == "fail":
            return _json({"error": {"message": "overloaded", "type": "unavailable"}}, 503)
        if state.mode in ("reject", "unauthorized"):
            return _rejection(request, state.mode)
        chat = request.url.path.endswith("/chat/completions")
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or state.chunks
        n_words = min(int(limit), state.chunks if "ECHO:" not in _prompt_text(body) else 64)
        words = _answer_words(body, n_words)
        usage = {
            "prompt_tokens": max(1, len(_prompt_text(body)) // 4),
            "completion_tokens": len(words),
            "total_tokens": max(1, len(_prompt_text(body)) // 4) + len(words),
        }
        common = {"id": "cmpl-mock", "created": int(time.time()), "model": body.get("model")}
        if not body.get("stream"):
            text = " ".join(words)
            if chat:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length",
                }
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
                obj = "text_completion"
            return _json({**common, "object": obj, "choices": [choice], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _stream(state, common, words, chat, usage if include_usage else None),
            media_type="text/event-stream",
        )

    async def embeddings(request: Request) -> Response:
        state.requests += 1
        body = orjson.loads(await request.body())
        state.last = body
        if state.mode == "fail":
            return _json({"error": {"message": "overloaded", "type": "unavailable"}}, 503)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": embed(str(text))}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(t)) // 4 + 1 for t in inputs)
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(_: Request) -> Response:
        return _json(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in state.models]}
        )

    async def health(_: Request) -> Response:
        return _json({"status": "ok"})

    async def control(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.mode = body.get("mode", state.mode)
        if "chunk_delay_ms" in body:
            state.chunk_delay = float(body["chunk_delay_ms"]) / 1000
        return _json({"mode": state.mode})

    async def stats(_: Request) -> Response:
        return _json(
            {
                "requests": state.requests,
                "completed": state.completed,
                "cancelled": state.cancelled,
                "mode": state.mode,
            }
        )

    async def last(_: Request) -> Response:
        return _json(state.last)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", generate, methods=["POST"]),
            Route("/v1/completions", generate, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
            Route("/_control", control, methods=["POST"]),
            Route("/_stats", stats),
            Route("/_last", last),
        ]
    )


async def _stream(
    state: MockState,
    common: dict[str, Any],
    words: list[str],
    chat: bool,
    usage: dict[str, Any] | None,
) -> AsyncIterator[bytes]:
    mode = state.mode
    delay = state.chunk_delay if mode != "slow" else (state.chunk_delay or 0.2)
    if mode == "slow":
        words = (words * 100)[:100]
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(piece: str, finish: str | None) -> bytes:
        if chat:
            delta = {"content": piece} if piece else {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece, "finish_reason": finish}
        return b"data: " + orjson.dumps({**common, "object": obj, "choices": [choice]}) + b"\n\n"

    try:
        if chat:
            role = {"role": "assistant", "content": ""}
            choice = {"index": 0, "delta": role, "finish_reason": None}
            yield b"data: " + orjson.dumps({**common, "object": obj, "choices": [choice]}) + b"\n\n"
        for index, word in enumerate(words):
            if mode == "cut" and index == 2:
                raise ConnectionAbortedError("mock upstream cut the stream")
            if delay:
                await asyncio.sleep(delay)
            yield event(word if index == 0 else " " + word, None)
        yield event("", "length")
        if usage is not None:
            payload = {**common, "object": obj, "choices": [], "usage": usage}
            yield b"data: " + orjson.dumps(payload) + b"\n\n"
        yield b"data: [DONE]\n\n"
        state.completed += 1
    except (asyncio.CancelledError, GeneratorExit):
        state.cancelled += 1
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    state = MockState(args.models or ["mock-model"], args.chunks, args.chunk_delay_ms / 1000)
    uvicorn.run(
        build_app(state),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
