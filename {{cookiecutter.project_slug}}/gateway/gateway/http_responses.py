"""Turning the pipeline's answers into HTTP: `serve` (one OpenAI route: body in, answer
out) and the SSE response that notices a client leaving at once."""

from __future__ import annotations

import contextlib

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.cache import bypass_requested
from gateway.exchange_log import new_request_id
from gateway.keys import KeyRecord
from gateway.pipeline import Answer, Pipeline
from gateway.route_adapters import RouteAdapter
from gateway.stream_relay import StreamAnswer


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once (not only on the
    next write) and always closes its body iterator, which ends the exchange."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # client went away mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True):
                    await closer()


async def serve(
    request: Request, key: KeyRecord, pipeline: Pipeline, route: RouteAdapter
) -> Response:
    """One OpenAI route: body in, the pipeline's answer out. The request id is always
    the gateway's own; a caller's `x-request-id` travels beside it (x-client-request-id)."""
    client_id = request.headers.get("x-request-id")
    body = await request.body()  # bounded by the BodyLimit middleware (body_limit.py)
    answer = await pipeline.handle(
        route,
        key,
        body,
        new_request_id(),
        bypass_cache=bypass_requested(request.headers),
        client_request_id=client_id[:200] if client_id else None,
    )
    if isinstance(answer, StreamAnswer):
        return SSEResponse(answer.events, media_type="text/event-stream", headers=answer.headers)
    assert isinstance(answer, Answer)
    return Response(
        answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers
    )
