"""Per-key requests- and tokens-per-minute limits, shared by every gateway replica.

One Lua script does the whole check in Redis, atomically, using Redis' own clock:
a sliding window (this minute's counter plus the previous minute's, weighted by how
much of it still overlaps the last 60 s). Tokens are *reserved* before the upstream
call (prompt estimate + max_tokens) and *settled* afterwards with the real usage, so
concurrent requests on any replica cannot overshoot the limit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.keys import KeyRecord
from gateway.redis_store import Command, RedisStore

WINDOW_SECONDS = 60

LIMIT_SCRIPT = """
local base = KEYS[1]
local window = tonumber(ARGV[2])
if ARGV[1] == 'settle' then
  local key = base .. ':t:' .. ARGV[3]
  if redis.call('EXISTS', key) == 1 then
    local value = redis.call('INCRBY', key, tonumber(ARGV[4]))
    if value < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
  return {1}
end
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local current = math.floor(now / window)
local elapsed = (now - current * window) / window
local overlap = 1 - elapsed
local rk, rkp = base .. ':r:' .. current, base .. ':r:' .. (current - 1)
local tk, tkp = base .. ':t:' .. current, base .. ':t:' .. (current - 1)
local requests = tonumber(redis.call('GET', rkp) or '0') * overlap
  + tonumber(redis.call('GET', rk) or '0')
local tokens = tonumber(redis.call('GET', tkp) or '0') * overlap
  + tonumber(redis.call('GET', tk) or '0')
local retry = math.max(1, math.ceil((1 - elapsed) * window))
if rpm > 0 and requests + 1 > rpm then
  return {0, 'requests', math.floor(requests), math.floor(tokens), retry, current}
end
if tpm > 0 and tokens + cost > tpm then
  return {0, 'tokens', math.floor(requests), math.floor(tokens), retry, current}
end
redis.call('INCR', rk)
redis.call('EXPIRE', rk, window * 2)
redis.call('INCRBY', tk, cost)
redis.call('EXPIRE', tk, window * 2)
return {1, '', math.ceil(requests) + 1, math.ceil(tokens) + cost, 0, current}
"""


def limit_key(key_id: str) -> str:
    """Redis key of one API key's limit window. The braces are a hash tag, so a
    Redis Cluster keeps each key's counters in one slot for the Lua script."""
    return "gw:rl:" + "{" + key_id + "}"


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    limit: str  # "requests" | "tokens" | "" when allowed
    rpm: int | None
    tpm: int | None
    used_requests: int
    used_tokens: int
    retry_after: int
    window: int
    reserved: int

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.rpm:
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.rpm - self.used_requests))
        if self.tpm:
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm - self.used_tokens))
        if not self.allowed:
            headers["retry-after"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.script = store.client.register_script(LIMIT_SCRIPT)

    @staticmethod
    def applies_to(record: KeyRecord) -> bool:
        return bool(record.rpm or record.tpm)

    def reserve_command(self, record: KeyRecord, tokens: int) -> Command:
        """The Redis command that counts one request and reserves `tokens` (to run alone
        with `reserve`, or beside other work with `RedisStore.call_and_get`)."""
        keys = [limit_key(record.id)]
        args: list[str | int] = [
            "reserve",
            WINDOW_SECONDS,
            record.rpm or 0,
            record.tpm or 0,
            tokens,
        ]
        return lambda client: self.script(keys=keys, args=args, client=client)

    @staticmethod
    def decision(record: KeyRecord, tokens: int, raw: list[Any]) -> LimitDecision:
        allowed, limit, used_requests, used_tokens, retry, window = raw
        return LimitDecision(
            allowed=bool(allowed),
            limit=limit.decode() if isinstance(limit, bytes) else str(limit),
            rpm=record.rpm,
            tpm=record.tpm,
            used_requests=int(used_requests),
            used_tokens=int(used_tokens),
            retry_after=int(retry),
            window=int(window),
            reserved=tokens if allowed else 0,
        )

    async def reserve(self, record: KeyRecord, tokens: int) -> LimitDecision:
        """Count one request and reserve `tokens`, or refuse; raises RedisUnavailable."""
        raw = await self.store.call(self.reserve_command(record, tokens))
        return self.decision(record, tokens, raw)

    async def settle(self, record: KeyRecord, decision: LimitDecision, actual_tokens: int) -> None:
        """Replace the reservation with the real usage. Raises RedisUnavailable."""
        delta = actual_tokens - decision.reserved
        if delta == 0 or not record.tpm:
            return
        await self.store.call(
            lambda r: self.script(
                keys=[limit_key(record.id)],
                args=["settle", WINDOW_SECONDS, decision.window, delta],
                client=r,
            )
        )
