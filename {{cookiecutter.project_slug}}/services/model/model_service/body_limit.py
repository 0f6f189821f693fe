"""A request body limit, enforced while the body is read (413 in OpenAI's error shape).

FastAPI reads a whole body into memory before validating it; without a limit one request
could make the process as large as the client likes. A declared `content-length` over
the limit is refused before reading; a chunked body is counted as it arrives.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_service.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"Request body larger than {self.max_bytes} bytes (MODEL_MAX_REQUEST_BYTES)."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, self._message())(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read: FastAPI's handler answers it.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)
