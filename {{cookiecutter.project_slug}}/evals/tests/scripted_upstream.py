"""A small OpenAI-compatible HTTP server with scripted behaviour, run as its own process
by the tests: known stream timings (TTFT, gaps between chunks), buffering like a bad
proxy, and scripted failures (429/5xx) for the retry logic.

    python scripted_upstream.py --port 8123 --script '{"ttft": 0.3, "gaps": [0.1, 0.2]}'

Script keys: ttft (s), gaps (list of s between text chunks), buffered (bool: hold every
chunk until the end), usage (bool), answer (non-stream reply), fail_first (int, answer
the first N chat requests with fail_status), fail_status (int), role_delay (s before the
role-only chunk), delay (s before a non-streamed answer).
POST /script replaces the script and resets the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def build_app(initial_script: dict[str, Any]) -> Starlette:
    script: dict[str, Any] = dict(initial_script)
    state: dict[str, Any] = {"chat_requests": 0, "bodies": []}

    def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    async def events(model: str) -> AsyncIterator[str]:
        gaps: list[float] = list(script.get("gaps", [0.05, 0.05]))
        held: list[str] = []
        buffered = bool(script.get("buffered", False))

        def emit(text: str) -> list[str]:
            if buffered:
                held.append(text)
                return []
            return [text]

        await asyncio.sleep(float(script.get("role_delay", 0.0)))
        for item in emit(chunk(model, {"role": "assistant", "content": ""})):
            yield item
        await asyncio.sleep(float(script.get("ttft", 0.1)))
        for item in emit(chunk(model, {"content": "tok0"})):
            yield item
        for i, gap in enumerate(gaps, start=1):
            await asyncio.sleep(gap)
            for item in emit(chunk(model, {"content": f" tok{i}"})):
                yield item
        for item in emit(chunk(model, {}, finish="length")):
            yield item
        if script.get("usage", True):
            usage = {
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(gaps) + 1,
                    "total_tokens": 5 + len(gaps) + 1,
                },
            }
            for item in emit(f"data: {json.dumps(usage)}\n\n"):
                yield item
        for item in held:
            yield item
        yield "data: [DONE]\n\n"

    async def chat(request: Request) -> Response:
        body = await request.json()
        state["chat_requests"] += 1
        state["bodies"].append({"body": body, "headers": dict(request.headers)})
        if state["chat_requests"] <= int(script.get("fail_first", 0)):
            status = int(script.get("fail_status", 429))
            error = {"message": "scripted failure", "type": "scripted", "param": None, "code": None}
            return JSONResponse({"error": error}, status, headers={"retry-after": "0"})
        model = str(body.get("model", "scripted"))
        if body.get("stream"):
            return StreamingResponse(events(model), media_type="text/event-stream")
        await asyncio.sleep(float(script.get("delay", 0.0)))
        answer = str(script.get("answer", "The capital of France is Paris."))
        return JSONResponse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            }
        )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def stats(request: Request) -> Response:
        return JSONResponse(state)

    async def configure(request: Request) -> Response:
        """Replace the script and reset the counters (lets tests reuse one process)."""
        script.clear()
        script.update(await request.json())
        state.update(chat_requests=0, bodies=[])
        return JSONResponse(script)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/stats", stats),
            Route("/script", configure, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script", default="{}")
    args = parser.parse_args()
    uvicorn.run(
        build_app(json.loads(args.script)), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
