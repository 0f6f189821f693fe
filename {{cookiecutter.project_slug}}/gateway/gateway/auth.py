"""API key authentication as FastAPI dependencies.

`require_api_key` returns the caller's `KeyRecord` (the key itself never leaves this
module, and is never logged). Other route modules (RAG) use the `ApiKey` alias.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.deps import StateDep
from gateway.errors import GatewayError
from gateway.keys import KeyLookupUnavailable, KeyRecord


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


async def require_api_key(request: Request, state: StateDep) -> KeyRecord:
    token = presented_key(request)
    if not token:
        raise GatewayError(
            401,
            "Missing API key: send `Authorization: Bearer <key>`.",
            code="missing_api_key",
        )
    client = request.client.host if request.client else "unknown"
    if state.keys.invalid.client_blocked(client) and state.keys.known_good(token) is None:
        raise GatewayError(
            429,
            "Too many invalid API keys from this client; retry in a minute.",
            code="too_many_invalid_keys",
            headers={"retry-after": "60"},
        )
    try:
        record = await state.keys.verify(token)
    except KeyLookupUnavailable:
        raise GatewayError(
            503,
            "The key store is unavailable and this key was not verified recently; retry shortly.",
            code="key_store_unavailable",
            headers={"retry-after": "5"},
        ) from None
    if record is None:
        state.keys.invalid.count_failure(client)
        raise GatewayError(401, "Invalid or expired API key.", code="invalid_api_key")
    request.state.key_record = record
    return record


async def require_master_key(record: Annotated[KeyRecord, Depends(require_api_key)]) -> KeyRecord:
    if not record.is_master:
        raise GatewayError(403, "This endpoint needs the master key.", code="forbidden")
    return record


ApiKey = Annotated[KeyRecord, Depends(require_api_key)]
MasterKey = Annotated[KeyRecord, Depends(require_master_key)]
