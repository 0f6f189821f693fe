"""A body limit on every route, enforced while the body is read (413 in OpenAI's shape).

A declared `content-length` over the limit is refused before anything is read; a body
without one (chunked) is counted as it arrives and refused as soon as it passes the
limit, so no route can be made to buffer more than `GATEWAY_MAX_BODY_BYTES`. Routes
read their body only after authentication (their dependencies run first; see
`json_body`), so an unauthenticated caller cannot make the gateway read anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError

M = TypeVar("M", bound=BaseModel)


class BodyTooLarge(Exception):
    pass


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body exceeds {limit} bytes.", code="body_too_large")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await too_large(self.limit).response()(scope, receive, send)
            return
        started = False
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.limit:
                raise BodyTooLarge()
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await too_large(self.limit).response()(scope, receive, send)


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads and validates a JSON body as `model` (400 when invalid).
    Declared after the key dependency in a route's signature, it runs after auth."""

    async def read(request: Request) -> M:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ())) or None
            message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
            raise GatewayError(400, message, param=param, code="invalid_request") from None

    return read


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` naming `model` as the request body (`app.py` adds its schema)."""
    DOCUMENTED_BODIES.append(model)
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}
    }


DOCUMENTED_BODIES: list[type[BaseModel]] = []
