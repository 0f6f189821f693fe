"""Semantic cache: RedisVL `SemanticCache` with embeddings from the gateway's upstreams.

Entries are scoped by a tag that hashes the tenant (the caller's key id under
`GATEWAY_CACHE_SCOPE=key`, the default; see `gateway.cache.cache_tenant`), the model,
the system prompt(s) and the generation parameters; a lookup only matches entries of
the same scope whose user prompt is within the distance threshold. The scope never
includes the full request (that would make it an exact cache). Only single-turn prompts
(system + one user message) are cached by default. A prompt in which PII was found (or
that carries the gateway's redaction marks) is neither looked up nor stored: a near
neighbour of it is another person's data. Without the Redis search module the gateway
logs one warning and runs without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from gateway.cache import cache_tenant
from gateway.guardrails import REDACTION_MARK, find_pii
from gateway.redis_store import RedisStore
from gateway.settings import Settings

log = logging.getLogger("gateway.semantic_cache")
SCOPE_EXCLUDED = frozenset({"messages", "stream", "stream_options", "user", "model"})

Embed = Callable[[str], Awaitable[list[float]]]


def _carries_pii(texts: list[str]) -> bool:
    return any(REDACTION_MARK in text or find_pii(text) for text in texts)


def semantic_key(
    model: str, payload: Mapping[str, Any], single_turn_only: bool, tenant: str
) -> tuple[str, str] | None:
    """(scope, prompt) for a cacheable chat request, else None."""
    system: list[str] = []
    users: list[str] = []
    for message in payload.get("messages") or ():
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            return None
        if role in ("system", "developer"):
            system.append(content)
        elif role == "user":
            users.append(content)
        elif single_turn_only:
            return None
    if not users or (single_turn_only and len(users) != 1) or _carries_pii(system + users):
        return None
    params = {k: v for k, v in payload.items() if k not in SCOPE_EXCLUDED}
    scope_source = orjson.dumps(
        {
            "tenant": tenant,
            "model": model,
            "system": system,
            "params": params,
            "history": users[:-1],
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(scope_source).hexdigest()[:32], users[-1]


class SemanticCache:
    def __init__(self, settings: Settings, store: RedisStore, embed: Embed) -> None:
        self.settings = settings
        self.store = store
        self.embed = embed
        self.enabled = settings.semantic_cache_enabled
        self._cache: Any = None
        self._sync_client: Any = None
        self._lock = asyncio.Lock()
        self._warned = False

    async def key(
        self, model: str, payload: Mapping[str, Any], key_id: str, prompt_chars: int
    ) -> tuple[str, str] | None:
        """`semantic_key` for a request of key `key_id` under this gateway's settings; its
        PII scan runs in a worker thread for prompts longer than the guardrails' limit."""
        tenant = cache_tenant(self.settings.cache_scope, key_id)
        args = (model, payload, self.settings.semantic_cache_single_turn_only, tenant)
        if prompt_chars > self.settings.guardrail_thread_chars:
            return await asyncio.to_thread(semantic_key, *args)
        return semantic_key(*args)

    async def check_search_module(self) -> None:
        """Disable (with one warning) when Redis has no search module."""
        if not self.enabled:
            return
        try:
            await self.store.client.execute_command("FT._LIST")
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                self._disable("Redis has no search module (FT._LIST unknown)")
        except (RedisError, OSError):
            pass  # Redis is down now; the first lookup after it returns checks again

    def _disable(self, reason: str) -> None:
        self.enabled = False
        if not self._warned:
            self._warned = True
            log.warning("semantic cache disabled: %s; serving without it", reason)

    async def _index(self, dims: int) -> Any:
        if self._cache is not None:
            return self._cache
        async with self._lock:
            if self._cache is None:
                self._cache = await asyncio.to_thread(self._build, dims)
        return self._cache

    def _build(self, dims: int) -> Any:
        from redisvl.extensions.cache.llm import SemanticCache as RedisVLSemanticCache
        from redisvl.utils.vectorize import BaseVectorizer

        model_tag = hashlib.sha256(self.settings.embedding_model.encode()).hexdigest()[:8]
        self._sync_client = self.store.sync_client()
        cache = RedisVLSemanticCache(
            name=f"gw-semcache-v{self.settings.cache_version}-{model_tag}-{dims}",
            distance_threshold=self.settings.semantic_cache_distance_threshold,
            ttl=self.settings.semantic_cache_ttl_seconds,
            # Vectors always come from the gateway's upstreams; this only carries dims.
            vectorizer=BaseVectorizer(model=self.settings.embedding_model, dims=dims),
            filterable_fields=[{"name": "scope", "type": "tag"}],
            # Index management is synchronous in RedisVL (this runs in a thread).
            redis_client=self._sync_client,
        )
        # Lookups and stores use the gateway's own async client (redisvl 0.x keeps it
        # in `_async_redis_client`; it creates one from a URL only when that is unset).
        cache._async_redis_client = self.store.client
        return cache

    async def lookup(self, scope: str, prompt: str) -> tuple[bytes | None, list[float] | None]:
        """(cached body or None, the prompt's vector to store later)."""
        if not self.enabled or not self.store.available:
            return None, None
        from redisvl.query.filter import Tag

        vector = await self.embed(prompt)
        try:
            cache = await self._index(len(vector))
            hits = await cache.acheck(
                vector=vector,
                num_results=1,
                return_fields=["response"],
                filter_expression=Tag("scope") == scope,
            )
        except Exception as exc:  # redisvl wraps redis errors in its own types
            self._on_error(exc)
            return None, vector
        if not hits:
            return None, vector
        return str(hits[0]["response"]).encode(), vector

    async def store_response(
        self, scope: str, prompt: str, vector: list[float], body: bytes
    ) -> None:
        if not self.enabled or not self.store.available:
            return
        try:
            cache = await self._index(len(vector))
            await cache.astore(prompt, body.decode(), vector=vector, filters={"scope": scope})
        except Exception as exc:
            self._on_error(exc)

    def _on_error(self, exc: Exception) -> None:
        text = str(exc).lower()
        if "unknown command" in text:
            self._disable(str(exc))
        else:
            self.store.breaker.record_failure()
            log.warning("semantic cache call failed: %s", type(exc).__name__)

    async def close(self) -> None:
        # The async client is the store's (closed with it); only the index client is ours.
        if self._sync_client is not None:
            try:
                self._sync_client.close()
            except Exception as exc:  # closing a broken connection must not fail shutdown
                log.debug("semantic cache disconnect failed: %s", exc)
