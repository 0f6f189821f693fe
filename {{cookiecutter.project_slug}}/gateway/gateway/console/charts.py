"""The usage chart as server-rendered SVG (no script, so the CSP stays strict)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, PAD = 720, 220, 40


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the hour, for the tooltip
    value: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    maximum: float
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def hourly_chart(points: list[dict[str, Any]], field: str, title: str) -> Chart:
    """Bars of `field` per hour (points as in the usage report's `hours`)."""
    values = [float(p[field]) for p in points]
    maximum = max(values, default=0.0) or 1.0
    slot = (WIDTH - 2 * PAD) / max(1, len(points))
    bars = []
    for index, (point, value) in enumerate(zip(points, values, strict=True)):
        height = (HEIGHT - 2 * PAD) * value / maximum
        label = time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(point["hour"]))
        bars.append(
            Bar(PAD + index * slot + 1, HEIGHT - PAD - height, slot - 2, height, label, value)
        )
    return Chart(bars, maximum, title)
