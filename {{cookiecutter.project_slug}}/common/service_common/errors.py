"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, raised
from one exception type and answered by one set of handlers.

The envelope is the same in every service; what `type` and `code` hold is the service's
contract: the gateway speaks OpenAI's (`"invalid_request_error"`, a string code), the
model service vLLM's (`"BadRequestError"`, the HTTP status as code). A service
subclasses `ServiceError` and says so in `default_type` / `default_code`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

# Validation errors name their place in the request; these parts of `loc` are noise.
_LOCATION_ROOTS = ("body", "query", "path")


def error_body(
    message: str, type: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ServiceError(Exception):
    """An error the client should see: HTTP status, message and the offending param."""

    # The 500 answer's message when a handler raised something else.
    unexpected_message = "The service failed to handle this request."

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | int | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code(status)
        self.type = type or self.default_type(status)
        self.headers = dict(headers or {})

    @classmethod
    def default_type(cls, status: int) -> str:
        return "api_error"

    @classmethod
    def default_code(cls, status: int) -> str | int | None:
        return None

    @classmethod
    def invalid_request(cls, message: str, param: str | None) -> ServiceError:
        """The 400 for a request that failed validation."""
        return cls(400, message, param=param)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, param): every problem as `param: reason`, the first one's param."""
    problems = [(_param(error), str(error.get("msg"))) for error in exc.errors()]
    if not problems:
        return "Invalid request.", None
    message = "; ".join(f"{param}: {msg}" if param else msg for param, msg in problems)
    return message, problems[0][0]


def _param(error: Mapping[str, Any]) -> str | None:
    location = [str(part) for part in error.get("loc", ()) if part not in _LOCATION_ROOTS]
    return ".".join(location) or None


def install_error_handlers(app: FastAPI, error_type: type[ServiceError], logger: str) -> None:
    """Every failure answered in `error_type`'s shape; never a bare 500 with a traceback
    (the traceback goes to the `logger` log)."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_type.invalid_request(*validation_message(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return error_type(exc.status_code, message, headers=exc.headers).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        logging.getLogger(logger).error("unhandled error", exc_info=exc)
        return error_type(500, error_type.unexpected_message).response()
