"""Exact response cache in Redis.

Key: SHA-256 of the canonical request (every field but `stream`, `stream_options` and
`user`, keys sorted), namespaced by cache version, route and model:
`gw:cache:v<version>:<route>:<model>:<sha256>`. Every entry has a TTL, so Redis'
`volatile-lru` policy evicts cache entries first and never an API key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.redis_store import RedisStore

NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "model"})


def canonical_hash(payload: Mapping[str, Any], exclude: frozenset[str] = NOT_IN_KEY) -> str:
    canonical = {k: v for k, v in payload.items() if k not in exclude}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def is_deterministic(payload: Mapping[str, Any]) -> bool:
    return payload.get("temperature") == 0 or payload.get("seed") is not None


def bypass_requested(headers: Mapping[str, str]) -> bool:
    if headers.get("x-cache-bypass", "").strip().lower() in ("1", "true", "yes"):
        return True
    return "no-cache" in headers.get("cache-control", "").lower()


class ExactCache:
    def __init__(self, store: RedisStore, version: str, ttl_seconds: int) -> None:
        self.store = store
        self.version = version
        self.ttl = ttl_seconds

    def key(self, route: str, model: str, payload: Mapping[str, Any]) -> str:
        return f"gw:cache:v{self.version}:{route}:{model}:{canonical_hash(payload)}"

    async def get(self, key: str) -> bytes | None:
        """The cached response body; raises RedisUnavailable."""
        value = await self.store.call(lambda r: r.get(key))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, body: bytes) -> None:
        await self.store.call(lambda r: r.set(key, body, ex=self.ttl))
