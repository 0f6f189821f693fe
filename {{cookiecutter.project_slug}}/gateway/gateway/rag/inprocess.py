"""Call the gateway app from inside itself, streaming responses as they are produced.

httpx's `ASGITransport` collects the whole response body before returning it, which
would turn a streamed RAG answer into one late chunk. This transport runs the app in a
task and hands each body chunk to the client as soon as the app sends it; closing the
response early tells the app the client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

_END = object()
DISCONNECT_GRACE_SECONDS = 5.0


class _QueueStream(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[object], task: asyncio.Task[None], disconnected: asyncio.Event
    ) -> None:
        self._chunks = chunks
        self._task = task
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._chunks.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        # Tell the app the client left (as a server would), give it a moment to wind
        # down on its own (release reservations, record metrics), then stop it.
        self._disconnected.set()
        if not self._task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), DISCONNECT_GRACE_SECONDS)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": self.client,
            "root_path": "",
        }
        chunks: asyncio.Queue[object] = asyncio.Queue()
        started = asyncio.Event()
        disconnected = asyncio.Event()
        head: dict[str, Any] = {}
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                head["status"] = message["status"]
                head["headers"] = message.get("headers", [])
                started.set()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await chunks.put(bytes(message["body"]))
                if not message.get("more_body", False):
                    await chunks.put(_END)

        failure: list[BaseException] = []

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure.append(exc)
                await chunks.put(exc)
            finally:
                started.set()
                await chunks.put(_END)

        task = asyncio.create_task(run())
        await started.wait()
        if "status" not in head:
            await task
            raise httpx.RemoteProtocolError(
                f"in-process request failed before a response: {failure[0]!r}"
                if failure
                else "in-process request ended without a response",
                request=request,
            )
        return httpx.Response(
            head["status"],
            headers=head["headers"],
            stream=_QueueStream(chunks, task, disconnected),
            request=request,
        )


def gateway_client(app: ASGIApp, api_key: str, timeout: float) -> httpx.AsyncClient:
    """An OpenAI-style client base (`.../v1/`) that reaches `app` without a socket."""
    return httpx.AsyncClient(
        transport=StreamingASGITransport(app),
        base_url="http://gateway/v1/",
        headers={"authorization": f"Bearer {api_key}"},
        timeout=timeout,
    )
