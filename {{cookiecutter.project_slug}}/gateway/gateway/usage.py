"""Reading the hourly usage counters back: `GET /admin/usage` and the console.

Each answered request adds to the hash `gw:usage:<hour>` (hours since the epoch, UTC)
in the limiter's settle script: fields `<line>\\n<r|i|o|c>` where the line is the JSON
`[key_id, key_name, team, model]` and the letter counts requests, input tokens, output
tokens and cost (nano-units). The hashes expire after GATEWAY_USAGE_RETENTION_HOURS.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.keys import KeyRecord
from gateway.redis_store import RedisStore
from gateway.spend import (
    WINDOWS,
    BudgetWindow,
    from_nano,
    hour_of,
    seconds_until_reset,
    usage_hour_key,
    window_ids,
)

COUNTS = {"r": "requests", "i": "input_tokens", "o": "output_tokens", "c": "spend"}


@dataclass
class UsageRow:
    key_id: str
    key_name: str
    team: str
    model: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS.values(), 0))

    def public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "key_name": self.key_name,
            "team": self.team or None,
            "model": self.model,
            **self._amounts(self.counts),
        }

    @staticmethod
    def _amounts(counts: dict[str, int]) -> dict[str, Any]:
        return {
            "requests": counts["requests"],
            "input_tokens": counts["input_tokens"],
            "output_tokens": counts["output_tokens"],
            "total_tokens": counts["input_tokens"] + counts["output_tokens"],
            "spend": from_nano(counts["spend"]),
        }


def hours_between(since: float, until: float) -> list[int]:
    return list(range(hour_of(since), hour_of(until) + 1))


async def read_hours(store: RedisStore, hours: list[int]) -> list[dict[Any, Any]]:
    """The raw hashes of `hours`, in one pipelined round trip."""

    async def read(r: Any) -> list[dict[Any, Any]]:
        async with r.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.hgetall(usage_hour_key(hour))
            result: list[dict[Any, Any]] = await pipe.execute()
            return result

    return await store.call(read)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def aggregate(raw_hours: list[dict[Any, Any]]) -> list[UsageRow]:
    rows: dict[str, UsageRow] = {}
    for raw in raw_hours:
        for name, value in raw.items():
            line, _, letter = _text(name).rpartition("\n")
            if letter not in COUNTS:
                continue
            row = rows.get(line)
            if row is None:
                key_id, key_name, team, model = orjson.loads(line)
                row = rows[line] = UsageRow(key_id, key_name, team, model)
            row.counts[COUNTS[letter]] += int(value)
    return sorted(rows.values(), key=lambda r: (r.key_id, r.model))


def series(hours: list[int], raw_hours: list[dict[Any, Any]]) -> list[dict[str, Any]]:
    """Per hour: the totals of every row (for the console's chart)."""
    points = []
    for hour, raw in zip(hours, raw_hours, strict=True):
        totals = {"hour": hour * 3600, **UsageRow._amounts(_sum([raw]))}
        points.append(totals)
    return points


def _sum(raw_hours: list[dict[Any, Any]]) -> dict[str, int]:
    total = dict.fromkeys(COUNTS.values(), 0)
    for row in aggregate(raw_hours):
        for name, value in row.counts.items():
            total[name] += value
    return total


def group(rows: list[UsageRow], by: str) -> list[dict[str, Any]]:
    """Totals per `key_id`, `team` or `model`."""
    groups: dict[str, dict[str, int]] = {}
    names: dict[str, str] = {}
    for row in rows:
        label = getattr(row, by)
        counts = groups.setdefault(label, dict.fromkeys(COUNTS.values(), 0))
        for name, value in row.counts.items():
            counts[name] += value
        names[label] = row.key_name
    result = []
    for label, counts in sorted(groups.items()):
        entry: dict[str, Any] = {by: label or None, **UsageRow._amounts(counts)}
        if by == "key_id":
            entry["key_name"] = names[label]
        result.append(entry)
    return result


async def usage_report(
    store: RedisStore, since: float | None, until: float | None, retention_hours: int
) -> dict[str, Any]:
    """Usage per key, team and model between `since` and `until` (default: 24 h)."""
    until = until if until is not None else time.time()
    since = since if since is not None else until - 86400
    if since > until:
        raise ValueError("since must not be later than until")
    if math.ceil((until - since) / 3600) > retention_hours:
        raise ValueError(f"the range exceeds the usage retention of {retention_hours} hours")
    hours = hours_between(since, until)
    raw = await read_hours(store, hours)
    rows = aggregate(raw)
    return {
        "since": since,
        "until": until,
        "currency_unit": "the price table's currency (GATEWAY_MODEL_PRICES)",
        "data": [row.public() for row in rows],
        "by_key": group(rows, "key_id"),
        "by_team": group(rows, "team"),
        "by_model": group(rows, "model"),
        "totals": UsageRow._amounts(_sum(raw)),
        "hours": series(hours, raw),
    }


async def budget_states(
    store: RedisStore, records: list[KeyRecord], teams: dict[str, tuple[float | None, str]]
) -> list[dict[str, Any]]:
    """Each budgeted key's and team's spend in its current window (one round trip)."""
    ids = dict(zip(WINDOWS, window_ids()[::2], strict=True))
    # kind, name, redis key, budget, window
    wanted: list[tuple[str, str, str, float, BudgetWindow]] = []
    for record in records:
        if record.budget is not None:
            window = _window(record.budget_window)
            counter = f"gw:spend:{{{record.id}}}:{ids[window]}"
            wanted.append(("key", record.id, counter, record.budget, window))
    for team, (budget, team_window) in teams.items():
        if budget is not None:
            window = _window(team_window)
            wanted.append(("team", team, f"gw:spend:team:{team}:{ids[window]}", budget, window))
    if not wanted:
        return []
    values = await store.call(lambda r: r.mget([w[2] for w in wanted]))
    return [
        {
            "kind": kind,
            "name": name,
            "budget": budget,
            "budget_window": window,
            "spent": from_nano(int(value or 0)),
            "resets_in_seconds": seconds_until_reset(window),
        }
        for (kind, name, _, budget, window), value in zip(wanted, values, strict=True)
    ]


def _window(name: str) -> BudgetWindow:
    for window in WINDOWS:
        if name == window:
            return window
    return "monthly"
