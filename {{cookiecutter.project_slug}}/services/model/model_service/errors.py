"""Errors in the shape vLLM's OpenAI server returns, so clients see one contract:

`{"error": {"message": str, "type": "BadRequestError", "param": str | null, "code": 400}}`

The envelope, the exception base and the handlers are `service_common.errors`; this
module holds vLLM's names for the types and its rule that `code` is the HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI
from starlette.responses import Response

from service_common.errors import ServiceError
from service_common.errors import install_error_handlers as _install

ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    499: "ClientClosedRequest",  # nginx's code for a client gone before the answer (no HTTPStatus)
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(ServiceError):
    """An error answered to the client with its status, message and offending param."""

    unexpected_message = "The model service failed to handle this request."

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, param=param, headers=headers)

    @classmethod
    def default_type(cls, status: int) -> str:
        return ERROR_TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "") + "Error"

    @classmethod
    def default_code(cls, status: int) -> int:
        return status

    @classmethod
    def invalid_request(cls, message: str, param: str | None) -> APIError:
        return cls(400, message, param)


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, object]:
    return APIError(status, message, param).body()


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return APIError(status, message, param, headers).response()


def install_error_handlers(app: FastAPI) -> None:
    _install(app, APIError, logger="model_service")
