"""Health probes by URL: `http(s)://...` must answer 200, `redis://...` must answer PING.

A Redis password is passed apart from the URL (URLs are printed and put on command
lines); the `devstack.after` gate takes it from REDISCLI_AUTH, as redis-cli does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import redis


def is_healthy(url: str, timeout: float = 2.0, redis_password: str | None = None) -> bool:
    try:
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(
                url,
                password=redis_password or None,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            try:
                return bool(client.ping())
            finally:
                client.close()
        return httpx.get(url, timeout=timeout).status_code == 200
    except (httpx.HTTPError, redis.RedisError, OSError):
        return False


def wait_healthy(
    url: str,
    timeout: float,
    interval: float = 1.0,
    keep_going: Callable[[], bool] = lambda: True,
    redis_password: str | None = None,
) -> bool:
    """Poll `url` until it is healthy (True), `timeout` passes or `keep_going()` is false."""
    deadline = time.monotonic() + timeout
    while keep_going():
        if is_healthy(url, redis_password=redis_password):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return False
