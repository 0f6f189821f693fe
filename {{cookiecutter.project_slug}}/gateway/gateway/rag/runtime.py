"""What the RAG router holds per app: settings, one Redis client, store and memory.

Created on first use and stored on `app.state.rag`; the router's lifespan closes it.
The Redis URL is the gateway's own (`GATEWAY_REDIS_URL`), so RAG shares its Redis, and
so is the embedding model unless `GATEWAY_RAG_EMBEDDING_MODEL` names another.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from redis.asyncio import Redis

from gateway.rag.memory import SessionMemory
from gateway.rag.settings import RagSettings, get_rag_settings
from gateway.rag.store import VectorStore


@dataclass
class RagRuntime:
    settings: RagSettings
    redis: Redis
    store: VectorStore
    memory: SessionMemory

    @classmethod
    def create(cls, settings: RagSettings, redis_url: str) -> RagRuntime:
        redis = Redis.from_url(
            redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
        )
        return cls(
            settings=settings,
            redis=redis,
            store=VectorStore(redis, settings.key_prefix),
            memory=SessionMemory(
                redis,
                settings.key_prefix,
                settings.session_ttl_seconds,
                settings.history_max_messages,
            ),
        )

    async def close(self) -> None:
        await self.redis.aclose()


def runtime_for(app: FastAPI) -> RagRuntime:
    runtime: RagRuntime | None = getattr(app.state, "rag", None)
    if runtime is None:
        settings: RagSettings = getattr(app.state, "rag_settings", None) or get_rag_settings()
        gateway_state = getattr(app.state, "gateway", None)
        redis_url = settings.redis_url
        if gateway_state is not None:
            redis_url = gateway_state.settings.redis_url
            if "embedding_model" not in settings.model_fields_set:
                # Unless RAG names its own, use the model the gateway was built with.
                embedding_model = gateway_state.settings.embedding_model
                settings = settings.model_copy(update={"embedding_model": embedding_model})
        runtime = RagRuntime.create(settings, redis_url)
        app.state.rag = runtime
    return runtime
