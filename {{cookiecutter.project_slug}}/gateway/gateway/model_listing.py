"""One upstream's `GET /v1/models`, read with bounds and validated.

An upstream's answer is not trusted: at most `MAX_LISTING_BYTES` are read (uncompressed:
the request asks for no content encoding and refuses any), within
`LISTING_TIMEOUT_SECONDS` in all, and at most `MAX_LISTED_MODELS` entries are taken.
Every entry taken must be a model card with a printable `id` (vLLM also gives `parent`,
the base model of a LoRA adapter); one bad entry makes the whole listing invalid, so a
garbled answer never replaces a good one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_LISTING_BYTES = 1_048_576
MAX_LISTED_MODELS = 1024
MAX_MODEL_ID_CHARS = 256
LISTING_TIMEOUT_SECONDS = 5.0
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class ListedModel(BaseModel):
    """One entry of `data`: the fields routing needs, the rest ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_MODEL_ID_CHARS, pattern=PRINTABLE)
    parent: str | None = Field(
        default=None, min_length=1, max_length=MAX_MODEL_ID_CHARS, pattern=PRINTABLE
    )


ENTRIES = TypeAdapter(list[ListedModel])


@dataclass(frozen=True)
class Listing:
    """The models an upstream listed (first `MAX_LISTED_MODELS`, duplicates dropped)."""

    models: tuple[ListedModel, ...]
    truncated: bool = False  # it listed more than were taken


class ListingError(Exception):
    """A listing that could not be read; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_listing(body: bytes) -> Listing:
    """The listing in an OpenAI `/v1/models` body; raises ListingError."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ListingError("invalid", "the answer is not JSON") from None
    entries = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ListingError("invalid", "the answer has no `data` list")
    try:
        models = ENTRIES.validate_python(entries[:MAX_LISTED_MODELS])
    except ValidationError as exc:
        raise ListingError("invalid", f"{exc.error_count()} invalid model entries") from None
    unique: dict[str, ListedModel] = {}
    for model in models:
        unique.setdefault(model.id, model)  # the first entry of an id wins
    return Listing(tuple(unique.values()), len(entries) > MAX_LISTED_MODELS)


async def fetch_listing(client: httpx.AsyncClient) -> Listing:
    """GET `/models` from the client's base URL within the bounds; raises ListingError."""
    try:
        async with asyncio.timeout(LISTING_TIMEOUT_SECONDS):
            body = await _read_bounded(client)
    except TimeoutError:
        raise ListingError("timeout", f"no listing within {LISTING_TIMEOUT_SECONDS:g}s") from None
    except httpx.HTTPError as exc:
        raise ListingError("connection", type(exc).__name__) from None
    return parse_listing(body)


async def _read_bounded(client: httpx.AsyncClient) -> bytes:
    headers = {"accept-encoding": "identity"}
    async with client.stream("GET", "/models", headers=headers) as response:
        if response.status_code != 200:
            raise ListingError("status", f"answered {response.status_code}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise ListingError("invalid", "the answer is compressed")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_LISTING_BYTES:
            raise ListingError("too_large", f"the answer is over {MAX_LISTING_BYTES} bytes")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_LISTING_BYTES:
                raise ListingError("too_large", f"the answer is over {MAX_LISTING_BYTES} bytes")
    return bytes(body)
