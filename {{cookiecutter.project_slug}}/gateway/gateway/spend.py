"""Prices, spend and budget windows.

Money is counted in whole *nano-units* of the price table's currency (1e-9), so Redis
adds integers and replicas never disagree by a rounding: a token costs
`price_per_million * 1000` nano-units. The counting itself happens in the limiter's
Lua script (`ratelimit.py`), in the same call that reserves and settles tokens.

Budget windows are calendar periods in UTC: `daily` (a day), `weekly` (an ISO week,
from Monday), `monthly` (a calendar month). The counter of the current window has no
TTL (Redis evicts only keys with one, and an evicted counter would reset a budget);
the first request of a new window puts a TTL on the closed one.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from gateway.settings import ModelPrice

NANO = 1_000_000_000
BudgetWindow = Literal["daily", "weekly", "monthly"]
WINDOWS: tuple[BudgetWindow, ...] = ("daily", "weekly", "monthly")


def to_nano(amount: float) -> int:
    return round(amount * NANO)


def from_nano(amount: int) -> float:
    return amount / NANO


@dataclass(frozen=True)
class Prices:
    """GATEWAY_MODEL_PRICES as nano-units per token; unlisted models cost nothing."""

    per_token: dict[str, tuple[int, int]]

    @classmethod
    def from_table(cls, table: dict[str, ModelPrice]) -> Prices:
        return cls(
            {
                model: (round(p.input_per_million * 1000), round(p.output_per_million * 1000))
                for model, p in table.items()
            }
        )

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """The cost in nano-units of `input_tokens` in and `output_tokens` out."""
        price_in, price_out = self.per_token.get(model, (0, 0))
        return input_tokens * price_in + output_tokens * price_out


def _start(window: BudgetWindow, now: datetime) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        return day
    if window == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_start(window: BudgetWindow, start: datetime) -> datetime:
    if window == "daily":
        return start + timedelta(days=1)
    if window == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def _window_id(window: BudgetWindow, start: datetime) -> str:
    return window[0] + start.strftime("%Y%m%d")


def window_ids(now: float | None = None) -> list[str]:
    """For each window (daily, weekly, monthly): the current and the previous id.
    Every window turns at a UTC midnight, so the ids are worked out once a day."""
    return list(_window_ids_of_day(int((now if now is not None else time.time()) // 86400)))


@functools.lru_cache(maxsize=4)
def _window_ids_of_day(day: int) -> tuple[str, ...]:
    moment = datetime.fromtimestamp(day * 86400, UTC)
    ids: list[str] = []
    for window in WINDOWS:
        start = _start(window, moment)
        ids += [_window_id(window, start), _window_id(window, _start(window, start - timedelta(1)))]
    return tuple(ids)


def seconds_until_reset(window: BudgetWindow, now: float | None = None) -> int:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    end = _next_start(window, _start(window, moment))
    return max(1, math.ceil((end - moment).total_seconds()))


def hour_of(timestamp: float) -> int:
    return int(timestamp // 3600)


def usage_hour_key(hour: int) -> str:
    return f"gw:usage:{hour}"
