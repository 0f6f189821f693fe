"""The gateway's Redis connection: short timeouts and a circuit breaker on every call.

This is the only module that creates Redis clients for the running gateway (keys,
limits, both caches, RAG vectors and chat history all share `RedisStore.client`; a
command line may open its own in its `cli.py`). One failure policy: every call goes
through `call(fn)`, which raises `RedisUnavailable` quickly when Redis is slow or down
(at most one timeout, then at once while the breaker is open), so no request waits on
an outage. Callers decide what an outage means for them (skip cache, fail open, 503).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.breaker import CircuitBreaker
from gateway.settings import Settings

T = TypeVar("T")
log = logging.getLogger("gateway.redis")


class RedisUnavailable(Exception):
    """Redis could not be reached (timeout, refused, breaker open)."""


Command = Callable[[Any], Awaitable[Any]]


def masked_url(url: str) -> str:
    """`url` with its password (and a user name's secret half) shown as `***`, for
    messages and logs: a Redis URL carries the server's password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***" if parts.username else ":***"
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    def __init__(self, settings: Settings, timeout_seconds: float | None = None) -> None:
        self.url = settings.redis_url
        self.timeout = timeout_seconds or settings.redis_timeout_seconds
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            max_connections=256,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failures, settings.redis_breaker_reset_seconds
        )
        self._was_down = False

    @property
    def available(self) -> bool:
        return self.breaker.state != "open"

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise RedisUnavailable("Redis circuit breaker is open")
        try:
            result = await fn(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.record_failure()
            if not self._was_down:
                log.warning("redis unavailable: %s", type(exc).__name__)
                self._was_down = True
            raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.breaker.release_trial()
            raise
        self.breaker.record_success()
        if self._was_down:
            log.warning("redis available again")
            self._was_down = False
        return result

    async def call_and_get(self, command: Command, key: str | None) -> tuple[Any, bytes | None]:
        """Run `command` and read `key` in one round trip (one pipeline), so a caller can
        combine work of two parts (a rate-limit reservation and a cache read) without
        either knowing of the other. Raises RedisUnavailable."""
        if key is None:
            return await self.call(command), None

        async def both(r: aioredis.Redis) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                await command(pipe)
                pipe.get(key)
                results: list[Any] = await pipe.execute()
                return results

        result, value = await self.call(both)
        return result, (bytes(value) if value is not None else None)

    def sync_client(self) -> Any:
        """A blocking client with the same URL and timeouts, for libraries that manage
        their indexes synchronously (RedisVL's semantic cache, at startup, off the loop)."""
        import redis

        return redis.Redis.from_url(
            self.url, socket_timeout=self.timeout * 4, socket_connect_timeout=self.timeout * 4
        )

    async def ping(self) -> bool:
        try:
            return bool(await self.call(lambda r: r.ping()))
        except RedisUnavailable:
            return False

    async def close(self) -> None:
        await self.client.aclose()
