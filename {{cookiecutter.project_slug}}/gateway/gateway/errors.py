"""The gateway's errors: OpenAI's shape and types (`service_common.errors` holds the
envelope, the exception base and the handlers)."""

from __future__ import annotations

from fastapi import FastAPI

from service_common.errors import ServiceError, error_body
from service_common.errors import install_error_handlers as _install

__all__ = ["ERROR_TYPES", "GatewayError", "error_body", "install_error_handlers"]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class GatewayError(ServiceError):
    """An error the client should see, with its HTTP status and OpenAI's error type."""

    unexpected_message = "The gateway failed to handle this request."
    code: str | None  # OpenAI's codes are strings (`invalid_request`, `rate_limited`, ...)

    @classmethod
    def default_type(cls, status: int) -> str:
        return ERROR_TYPES.get(status, "api_error")

    @classmethod
    def invalid_request(cls, message: str, param: str | None) -> GatewayError:
        return cls(400, message, param=param, code="invalid_request")


def install_error_handlers(app: FastAPI) -> None:
    _install(app, GatewayError, logger="gateway")
