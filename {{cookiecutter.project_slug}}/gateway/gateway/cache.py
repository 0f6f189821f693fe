"""Exact response cache in Redis.

Key: SHA-256 of the canonical request (every field but `stream`, `stream_options` and
`user`, keys sorted), namespaced by cache version, route, model and tenant:
`gw:cache:v<version>:<route>:<model>:<tenant>:<sha256>`. The tenant is the caller's key
id under `GATEWAY_CACHE_SCOPE=key` (the default), so no key is ever answered from, or
told about (`x-cache: hit`), another key's requests; `shared` for `shared`. Every entry
has a TTL, so Redis' `volatile-lru` policy evicts cache entries first and never an API key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.redis_store import RedisStore
from gateway.settings import CacheScope

NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "model"})


def canonical_hash(payload: Mapping[str, Any], exclude: frozenset[str] = NOT_IN_KEY) -> str:
    canonical = {k: v for k, v in payload.items() if k not in exclude}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cache_tenant(scope: CacheScope, key_id: str) -> str:
    """Whose cache entries a request of key `key_id` may read and write."""
    return f"key={key_id}" if scope == "key" else "shared"


def is_deterministic(payload: Mapping[str, Any]) -> bool:
    return payload.get("temperature") == 0 or payload.get("seed") is not None


def bypass_requested(headers: Mapping[str, str]) -> bool:
    if headers.get("x-cache-bypass", "").strip().lower() in ("1", "true", "yes"):
        return True
    return "no-cache" in headers.get("cache-control", "").lower()


class ExactCache:
    def __init__(
        self, store: RedisStore, version: str, ttl_seconds: int, scope: CacheScope = "key"
    ) -> None:
        self.store = store
        self.version = version
        self.ttl = ttl_seconds
        self.scope = scope

    def key(self, route: str, model: str, payload: Mapping[str, Any], key_id: str) -> str:
        tenant = cache_tenant(self.scope, key_id)
        return f"gw:cache:v{self.version}:{route}:{model}:{tenant}:{canonical_hash(payload)}"

    async def get(self, key: str) -> bytes | None:
        """The cached response body; raises RedisUnavailable."""
        value = await self.store.call(lambda r: r.get(key))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, body: bytes) -> None:
        await self.store.call(lambda r: r.set(key, body, ex=self.ttl))
