"""Guardrail scan time against prompt size: the gateway's RE2 patterns on normalised
text (`gateway.guardrails.find_pii`) against the backtracking `re` patterns it had
before, on the issue's hostile prompt (`"a."` repeated), a phone/card trap and prose.

    python bench/bench_guardrails.py [--max-chars 198000]

The old patterns are quadratic on the hostile input, so their sizes stop once one scan
takes longer than `--budget-seconds`. Writes bench/results/guardrails.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "gateway"))
sys.path.insert(0, str(BENCH_DIR.parent / "common"))

from gateway.guardrails import find_pii  # noqa: E402

# The patterns the gateway used before RE2 (Python `re`, look-around, unbounded `+`).
OLD_PATTERNS = [
    re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b"),
    re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    re.compile(
        r"(?<![\w+])\+?\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}(?!\w)"
    ),
]
INPUTS: dict[str, Callable[[int], str]] = {
    "hostile a.": lambda n: ("a." * (n // 2 + 1))[:n],
    "digit-run trap": lambda n: (("1" * 20 + "x ") * (n // 22 + 1))[:n],
    "prose": lambda n: ("The quick brown fox jumps over the lazy dog. " * (n // 45 + 1))[:n],
}
SIZES = [2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 198_000]


def old_scan(text: str) -> int:
    return sum(1 for pattern in OLD_PATTERNS for _ in pattern.finditer(text))


def timed(scan: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    scan(text)
    return time.perf_counter() - started


def run(max_chars: int, budget: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for input_name, make in INPUTS.items():
        for engine, scan in (("re (before)", old_scan), ("RE2 + views (now)", find_pii)):
            for size in (s for s in SIZES if s <= max_chars):
                seconds = min(timed(scan, make(size)) for _ in range(3 if size < 50_000 else 1))
                rows.append({"input": input_name, "engine": engine, "chars": size, "s": seconds})
                if seconds > budget:
                    break  # quadratic from here on: the next size would take minutes
    return rows


def markdown(rows: list[dict[str, object]], machine: str) -> str:
    lines = [
        "# Guardrail scan time",
        "",
        f"{machine}. One PII scan (all four kinds) per row, best of 3 below 50k characters.",
        "",
        "| input | engine | characters | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['input']} | {r['engine']} | {r['chars']} | {r['s']:.4f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for input_name in INPUTS:
        for engine, style in (("re (before)", "--"), ("RE2 + views (now)", "-")):
            points = [r for r in rows if r["input"] == input_name and r["engine"] == engine]
            xs = [float(str(r["chars"])) for r in points]
            ys = [float(str(r["s"])) for r in points]
            axis.plot(xs, ys, style, marker="o", label=f"{engine}, {input_name}")
    axis.set(xscale="log", yscale="log", xlabel="prompt characters", ylabel="seconds per scan")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-chars", type=int, default=198_000)
    parser.add_argument("--budget-seconds", type=float, default=5.0)
    args = parser.parse_args()
    rows = run(args.max_chars, args.budget_seconds)
    machine = f"{os.cpu_count()} CPUs, {platform.platform()}, load {os.getloadavg()[0]:.2f}"
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    (out / "guardrails.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (out / "guardrails.md").write_text(markdown(rows, machine))
    plot(rows, out / "guardrails.png")
    print(markdown(rows, machine))


if __name__ == "__main__":
    main()
