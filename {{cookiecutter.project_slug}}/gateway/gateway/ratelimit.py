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

from gateway.keys import TEAM_PREFIX, KeyRecord
from gateway.redis_store import Command, RedisStore
from gateway.spend import seconds_until_reset, to_nano, window_ids

WINDOW_SECONDS = 60

LIMIT_SCRIPT = """
local base, spend, team, team_spend = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local window = tonumber(ARGV[2])
if ARGV[1] == 'settle' then
  -- 3 limit window, 4 token delta, 5 cost delta, 6/7 key/team budget window id,
  -- 8 usage hash, 9 usage field, 10 input, 11 output, 12 cost, 13 usage ttl
  local function add(key, delta)
    if delta ~= 0 and redis.call('EXISTS', key) == 1 then
      local value = redis.call('INCRBY', key, delta)
      if value < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    end
  end
  if ARGV[3] ~= '' then add(base .. ':t:' .. ARGV[3], tonumber(ARGV[4])) end
  local cost_delta = tonumber(ARGV[5])
  if ARGV[6] ~= '' then add(spend .. ':' .. ARGV[6], cost_delta) end
  if ARGV[7] ~= '' then add(team_spend .. ':' .. ARGV[7], cost_delta) end
  if ARGV[8] ~= '' then
    local hash, f = ARGV[8], ARGV[9]
    redis.call('HINCRBY', hash, f .. '\\nr', 1)
    redis.call('HINCRBY', hash, f .. '\\ni', tonumber(ARGV[10]))
    redis.call('HINCRBY', hash, f .. '\\no', tonumber(ARGV[11]))
    redis.call('HINCRBY', hash, f .. '\\nc', tonumber(ARGV[12]))
    redis.call('EXPIRE', hash, tonumber(ARGV[13]))
  end
  return {1}
end
-- 3 rpm, 4 tpm, 5 tokens, 6 cost, 7 key budget, 8 key budget window, 9 closed ttl,
-- 10..15 current and previous window ids (daily, weekly, monthly)
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local money = tonumber(ARGV[6])
local ids = {daily = {ARGV[10], ARGV[11]}, weekly = {ARGV[12], ARGV[13]},
             monthly = {ARGV[14], ARGV[15]}}
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
local budgets = {}
local key_budget = tonumber(ARGV[7])
if key_budget > 0 then
  budgets[#budgets + 1] = {'budget_key', spend, key_budget, ARGV[8], 7}
end
if team ~= '' then
  local record = redis.call('HMGET', team, 'budget', 'window')
  if record[1] and record[1] ~= '' then
    budgets[#budgets + 1] = {'budget_team', team_spend, tonumber(record[1]), record[2], 8}
  end
end
local result = {1, '', 0, 0, 0, current, '', '', 0, 0, ''}
for _, b in ipairs(budgets) do
  local wid = ids[b[4]] or ids['monthly']
  local spent = tonumber(redis.call('GET', b[2] .. ':' .. wid[1]) or '0')
  if spent + money > b[3] then
    return {0, b[1], math.floor(requests), math.floor(tokens), 0, current, '', '',
            spent, b[3], b[4]}
  end
  b[6] = wid
  result[b[5]] = wid[1]
end
for _, b in ipairs(budgets) do
  redis.call('INCRBY', b[2] .. ':' .. b[6][1], money)
  local closed = b[2] .. ':' .. b[6][2]
  if redis.call('TTL', closed) == -1 then redis.call('EXPIRE', closed, tonumber(ARGV[9])) end
end
redis.call('INCR', rk)
redis.call('EXPIRE', rk, window * 2)
redis.call('INCRBY', tk, cost)
redis.call('EXPIRE', tk, window * 2)
result[3], result[4] = math.ceil(requests) + 1, math.ceil(tokens) + cost
return result
"""


def limit_key(key_id: str) -> str:
    """Redis key of one API key's limit window. The braces are a hash tag, so a
    Redis Cluster keeps each key's counters in one slot for the Lua script."""
    return "gw:rl:" + "{" + key_id + "}"


def script_keys(record: KeyRecord) -> list[str]:
    """The limit base, the key's spend base, the team's record and spend base."""
    team = record.team or ""
    return [
        limit_key(record.id),
        "gw:spend:{" + record.id + "}",
        TEAM_PREFIX + team if team else "",
        "gw:spend:team:" + team if team else "",
    ]


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    limit: str  # "requests" | "tokens" | "budget_key" | "budget_team" | "" when allowed
    rpm: int | None
    tpm: int | None
    used_requests: int
    used_tokens: int
    retry_after: int
    window: int
    reserved: int
    cost: int = 0  # nano-units reserved against the budgets
    key_budget_window: str = ""  # the budget window ids the reservation went to
    team_budget_window: str = ""
    spent: int = 0  # for a budget refusal: spent so far and the budget, in nano-units
    budget: int = 0
    budget_period: str = ""  # daily | weekly | monthly

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


@dataclass(frozen=True)
class UsageEntry:
    """One answered request's line in the hourly usage counters."""

    hour_key: str
    field: str  # JSON [key_id, key_name, team, model]
    input_tokens: int
    output_tokens: int
    cost: int
    ttl_seconds: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RateLimiter:
    def __init__(self, store: RedisStore, closed_window_ttl: int = 35 * 86400) -> None:
        self.store = store
        self.script = store.client.register_script(LIMIT_SCRIPT)
        self.closed_window_ttl = closed_window_ttl

    @staticmethod
    def applies_to(record: KeyRecord) -> bool:
        return bool(record.rpm or record.tpm or record.budget or record.team)

    def reserve_command(self, record: KeyRecord, tokens: int, cost: int = 0) -> Command:
        """The Redis command that counts one request and reserves `tokens` and `cost`
        (to run alone with `reserve`, or beside other work with
        `RedisStore.call_and_get`)."""
        keys = script_keys(record)
        args: list[str | int] = [
            "reserve",
            WINDOW_SECONDS,
            record.rpm or 0,
            record.tpm or 0,
            tokens,
            cost,
            to_nano(record.budget) if record.budget else 0,
            record.budget_window,
            self.closed_window_ttl,
            *window_ids(),
        ]
        return lambda client: self.script(keys=keys, args=args, client=client)

    @staticmethod
    def decision(record: KeyRecord, tokens: int, raw: list[Any], cost: int = 0) -> LimitDecision:
        allowed, limit, used_requests, used_tokens, retry, window = raw[:6]
        key_wid, team_wid, spent, budget, period = [*raw[6:], "", "", 0, 0, ""][:5]
        label = _text(limit)
        if label.startswith("budget"):
            retry = seconds_until_reset(_text(period))  # type: ignore[arg-type]
        return LimitDecision(
            allowed=bool(allowed),
            limit=label,
            rpm=record.rpm,
            tpm=record.tpm,
            used_requests=int(used_requests),
            used_tokens=int(used_tokens),
            retry_after=int(retry),
            window=int(window),
            reserved=tokens if allowed else 0,
            cost=cost if allowed else 0,
            key_budget_window=_text(key_wid),
            team_budget_window=_text(team_wid),
            spent=int(spent),
            budget=int(budget),
            budget_period=_text(period),
        )

    async def reserve(self, record: KeyRecord, tokens: int, cost: int = 0) -> LimitDecision:
        """Count one request and reserve `tokens`, or refuse; raises RedisUnavailable."""
        raw = await self.store.call(self.reserve_command(record, tokens, cost))
        return self.decision(record, tokens, raw, cost)

    async def settle(
        self,
        record: KeyRecord,
        decision: LimitDecision | None,
        actual_tokens: int,
        usage: UsageEntry | None = None,
    ) -> None:
        """Replace the reservation with the real usage and cost, and count the usage
        per hour, in one script call. Raises RedisUnavailable."""
        cost = usage.cost if usage is not None else 0  # no answer: refund it all
        token_delta = actual_tokens - decision.reserved if decision and record.tpm else 0
        cost_delta = cost - decision.cost if decision else 0
        if token_delta == 0 and cost_delta == 0 and usage is None:
            return
        args: list[str | int] = [
            "settle",
            WINDOW_SECONDS,
            decision.window if decision else "",
            token_delta,
            cost_delta,
            decision.key_budget_window if decision else "",
            decision.team_budget_window if decision else "",
        ]
        if usage is not None:
            args += [usage.hour_key, usage.field, usage.input_tokens, usage.output_tokens]
            args += [usage.cost, usage.ttl_seconds]
        else:
            args += ["", "", 0, 0, 0, 0]
        keys = script_keys(record)
        await self.store.call(lambda r: self.script(keys=keys, args=args, client=r))
