"""Chat history per session in Redis: a capped list with a TTL renewed on each turn.

Sessions are scoped by a digest of the caller's API key, so one key can never read or
extend another key's conversation even if it guesses the session id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from redis.asyncio import Redis


class SessionMemory:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int, max_messages: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.max_messages = max_messages

    def key(self, owner: str, session_id: str) -> str:
        owner_digest = hashlib.sha256(owner.encode()).hexdigest()[:16]
        session_digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
        return f"{self.prefix}:session:{owner_digest}:{session_digest}"

    async def load(self, owner: str, session_id: str) -> list[BaseMessage]:
        if self.max_messages == 0:
            return []
        raw = await self.redis.lrange(self.key(owner, session_id), -self.max_messages, -1)
        return messages_from_dict([json.loads(item) for item in raw])

    async def append(self, owner: str, session_id: str, messages: Sequence[BaseMessage]) -> None:
        if self.max_messages == 0 or not messages:
            return
        key = self.key(owner, session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *[json.dumps(message_to_dict(m)) for m in messages])
            pipe.ltrim(key, -self.max_messages, -1)
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()

    async def ttl(self, owner: str, session_id: str) -> int:
        return int(await self.redis.ttl(self.key(owner, session_id)))
