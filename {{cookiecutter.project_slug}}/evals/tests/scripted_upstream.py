"""A small OpenAI-compatible HTTP server with scripted behaviour, run as its own process
by the tests: known stream timings (TTFT, gaps between chunks), buffering like a bad
proxy, and scripted failures (429/5xx) for the retry logic.

    python scripted_upstream.py --port 8123 --script '{"ttft": 0.3, "gaps": [0.1, 0.2]}'

Script keys: ttft (s), gaps (list of s between text chunks), buffered (bool: hold every
chunk until the end), usage (bool), answer (non-stream reply), fail_first (int, answer
the first N chat requests with fail_status), fail_status (int), role_delay (s before the
role-only chunk), delay (s before a non-streamed answer).
Non-streamed answers per request: replies (list of {"match": text found in the last user
message, then "content": str or "tool_calls": [{"name", "arguments": object or str}]};
the first match wins, else `answer`), models ({model name: script keys for requests
naming that model}, e.g. two "models" with different replies), reject_fields (request
fields answered with a 400, as an endpoint without that feature does).
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

    def error(message: str, status: int) -> JSONResponse:
        body = {"message": message, "type": "scripted", "param": None, "code": None}
        return JSONResponse({"error": body}, status, headers={"retry-after": "0"})

    def message_for(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The scripted assistant message and finish reason for a non-streamed request."""
        rules = {**script, **(script.get("models") or {}).get(str(body.get("model")), {})}
        user = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = str(user[-1].get("content", "")) if user else ""
        reply: Any = next(
            (r for r in rules.get("replies", []) if str(r["match"]) in last),
            {"content": str(rules.get("answer", "The capital of France is Paris."))},
        )
        if "tool_calls" not in reply:
            return {"role": "assistant", "content": str(reply["content"])}, "stop"
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call["arguments"]
                    if isinstance(call["arguments"], str)
                    else json.dumps(call["arguments"]),
                },
            }
            for i, call in enumerate(reply["tool_calls"])
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"

    async def chat(request: Request) -> Response:
        body = await request.json()
        state["chat_requests"] += 1
        state["bodies"].append({"body": body, "headers": dict(request.headers)})
        if state["chat_requests"] <= int(script.get("fail_first", 0)):
            return error("scripted failure", int(script.get("fail_status", 429)))
        rejected = [f for f in script.get("reject_fields", []) if f in body]
        if rejected:
            return error(f"Unsupported by the scripted backend: {', '.join(rejected)}", 400)
        model = str(body.get("model", "scripted"))
        if body.get("stream"):
            return StreamingResponse(events(model), media_type="text/event-stream")
        await asyncio.sleep(float(script.get("delay", 0.0)))
        message, finish_reason = message_for(body)
        return JSONResponse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
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
