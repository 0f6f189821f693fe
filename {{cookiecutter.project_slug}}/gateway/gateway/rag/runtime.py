"""What RAG holds per app: the gateway's settings, its Redis store (one client, one
failure policy), the vector store, chat memory and the pipeline its model calls use.

Built once by `create_app` (through `gateway.rag.api.create_runtime`), never lazily.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redisvl.exceptions import RedisSearchError

from gateway.errors import GatewayError
from gateway.pipeline import Pipeline
from gateway.rag.memory import SessionMemory
from gateway.rag.store import VectorStore
from gateway.redis_store import RedisStore, RedisUnavailable
from gateway.settings import Settings
from gateway.state import GatewayState

T = TypeVar("T")


@dataclass
class RagRuntime:
    settings: Settings
    redis: RedisStore
    store: VectorStore
    memory: SessionMemory
    pipeline: Pipeline

    @classmethod
    def create(cls, state: GatewayState) -> RagRuntime:
        settings, client = state.settings, state.store.client
        return cls(
            settings=settings,
            redis=state.store,
            store=VectorStore(client, settings.rag_key_prefix),
            memory=SessionMemory(
                client,
                settings.rag_key_prefix,
                settings.rag_session_ttl_seconds,
                settings.rag_history_max_messages,
            ),
            pipeline=state.pipeline,
        )

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run RAG's Redis work under the gateway's Redis policy (breaker, timeouts);
        an outage is a 503 in OpenAI's shape."""
        try:
            result: T = await self.redis.call(lambda _client: work())
            return result
        except (RedisUnavailable, RedisSearchError) as exc:
            raise GatewayError(
                503,
                f"The vector store is unavailable: {type(exc).__name__}.",
                code="vector_store_unavailable",
                headers={"retry-after": "5"},
            ) from exc
