"""Gateway benchmark (`make bench-gateway`): direct to a fast mock upstream vs through
this gateway vs through LiteLLM's proxy, one worker each, same machine, one run.

    python bench/bench_gateway.py [--quick] [--no-litellm] [--soak [--soak-seconds 600]]

Measures added latency at concurrency 1 and at fixed request rates (open loop), the
highest rate each system sustains (p99 added < 50 ms, no errors), exact-cache hit
latency, streaming time to first token and inter-chunk gap added, and RSS (a soak
runs a steady rate for 10 minutes). Writes bench/results/gateway.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
for extra in (BENCH_DIR, PROJECT_ROOT, PROJECT_ROOT / "common", PROJECT_ROOT / "gateway"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import uvloop  # noqa: E402
from gateway_load import LoadResult, Target, closed_loop, open_loop, streaming  # noqa: E402
from gateway_report import write  # noqa: E402
from gateway_systems import (  # noqa: E402
    LITELLM_VERSION,
    MODEL,
    System,
    ensure_litellm,
    gateway,
    litellm,
    mock_upstream,
    redis_server,
    set_chunk_delay,
)
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

console = Console()
RATES = [10, 25, 50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500]
REFINE_STEPS = 2  # bisections between a system's last sustained and first failed rate
C1_ROUNDS = 5  # concurrency-1 runs alternate between systems, so load drift hits all alike
ADDED_P99_LIMIT_MS = 50.0
STREAM_CHUNKS = 16
STREAM_DELAY_MS = 5.0


def overhead_target(system: System) -> Target:
    # Cache-bypassed: the gateway still authenticates, checks limits and routes.
    extra = {"x-cache-bypass": "1"} if system.name == "gateway" else {}
    return Target.chat(system.base_url, system.key, MODEL, extra, max_tokens=16)


def added(row: dict[str, Any], base: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if row.get(key) is not None and base.get(key) is not None:
            row[f"added_{key}"] = round(row[key] - base[key], 3)


def sustained(step: dict[str, Any], rate: float) -> bool:
    return (
        step["errors"] == 0
        and step["achieved_rps"] >= 0.95 * rate
        and step.get("added_p99_ms") is not None
        and step["added_p99_ms"] < ADDED_P99_LIMIT_MS
    )


def run_rates(systems: list[System], seconds: float, rates: list[int]) -> tuple[list, dict]:
    steps: list[dict[str, Any]] = []
    best: dict[str, float | None] = {s.name: None for s in systems}
    active = {s.name for s in systems}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("fixed rates", total=len(rates))
        for rate in rates:
            if not active - {"direct"}:
                break
            direct: dict[str, Any] | None = None
            for system in systems:
                if system.name not in active:
                    continue
                progress.update(task, description=f"{rate}/s {system.name}")
                result = asyncio.run(open_loop(overhead_target(system), rate, seconds))
                step = {"rate": rate, "system": system.name, **result.summary()}
                if system.name == "direct":
                    direct = step
                    step["sustained"] = step["errors"] == 0 and step["achieved_rps"] >= 0.95 * rate
                else:
                    if direct is not None:
                        added(step, direct, ("p50_ms", "p99_ms"))
                    step["sustained"] = sustained(step, rate)
                steps.append(step)
                if step["sustained"]:
                    best[system.name] = rate
                else:
                    active.discard(system.name)
                time.sleep(0.5)
            if direct is not None and not direct["sustained"]:
                console.print(f"[yellow]the mock itself stops keeping up at {rate}/s[/yellow]")
                break
            progress.advance(task)
    _refine(systems, seconds, steps, best)
    return steps, best


def _run_step(system: System, rate: int, seconds: float, direct: dict[str, Any] | None) -> dict:
    result = asyncio.run(open_loop(overhead_target(system), rate, seconds))
    step = {"rate": rate, "system": system.name, **result.summary()}
    if direct is not None:
        added(step, direct, ("p50_ms", "p99_ms"))
        step["sustained"] = sustained(step, rate)
    else:
        step["sustained"] = step["errors"] == 0 and step["achieved_rps"] >= 0.95 * rate
    time.sleep(0.5)
    return step


def _refine(systems: list[System], seconds: float, steps: list[dict[str, Any]], best: dict) -> None:
    """Bisect between each system's last sustained and first failed coarse rate."""
    direct_system = systems[0]
    for system in systems[1:]:
        failed = [s["rate"] for s in steps if s["system"] == system.name and not s["sustained"]]
        if not failed:
            continue
        low, high = best[system.name] or 0, failed[0]
        for _ in range(REFINE_STEPS):
            middle = (low + high) // 2
            if middle <= low:
                break
            direct = _run_step(direct_system, middle, seconds, None)
            step = _run_step(system, middle, seconds, direct)
            steps += [direct, step]
            if step["sustained"]:
                low = best[system.name] = middle
            else:
                high = middle
    steps.sort(key=lambda s: (s["rate"], s["system"] != "direct", s["system"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    parser.add_argument("--soak", action="store_true", help="add a soak at a steady rate")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="default: half the gateway's highest sustained rate in this run",
    )
    parser.add_argument(
        "--spend",
        action="store_true",
        help="add a gateway with prices and a budgeted key to the concurrency-1 rounds",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    uvloop.install()

    requests_c1 = 100 if args.quick else 500
    rate_seconds = 2.0 if args.quick else 4.0
    rates = RATES[:4] if args.quick else RATES
    stream_requests = 20 if args.quick else 100

    litellm_bin = None if args.no_litellm else ensure_litellm(console.print)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "litellm_version": LITELLM_VERSION,
            "requests_concurrency_1": requests_c1,
            "rate_step_seconds": rate_seconds,
            "stream_chunks": STREAM_CHUNKS,
            "stream_chunk_delay_ms": STREAM_DELAY_MS,
            "added_p99_limit_ms": ADDED_P99_LIMIT_MS,
            "gateway": "keys + rate limits (Lua, Redis) + exact cache on; requests cache-bypassed",
            "litellm": "master key only, no cache, no database",
        },
    }
    log_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    console.print(f"logs in {log_dir}")
    with ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(log_dir, chunks=STREAM_CHUNKS))
        redis_url = stack.enter_context(redis_server(log_dir))
        systems = [mock, stack.enter_context(gateway(log_dir, mock, redis_url))]
        c1_systems = list(systems)
        if args.spend:
            c1_systems.append(stack.enter_context(gateway(log_dir, mock, redis_url, spend=True)))
        if litellm_bin is not None:
            systems.append(stack.enter_context(litellm(log_dir, mock, litellm_bin)))
        rss: dict[str, dict[str, float | None]] = {
            s.name: {"start": s.rss_mb(), "end": None} for s in systems if s.name != "direct"
        }

        console.print("warm-up")
        for system in c1_systems:
            asyncio.run(closed_loop(overhead_target(system), 200, concurrency=4))

        console.print(f"concurrency 1: {requests_c1} requests each, in {C1_ROUNDS} rounds")
        merged = {system.name: LoadResult() for system in c1_systems}
        for _ in range(C1_ROUNDS):
            for system in c1_systems:
                part = asyncio.run(closed_loop(overhead_target(system), requests_c1 // C1_ROUNDS))
                total = merged[system.name]
                total.latencies += part.latencies
                total.errors += part.errors
                total.sent += part.sent
                total.duration += part.duration
        c1: dict[str, dict[str, Any]] = {name: r.summary() for name, r in merged.items()}
        for name, row in c1.items():
            if name != "direct":
                added(row, c1["direct"], ("p50_ms", "p99_ms"))
        results["concurrency_1"] = c1
        if args.spend:
            results["spend_added_p50_delta_ms"] = round(
                c1["gateway+spend"]["added_p50_ms"] - c1["gateway"]["added_p50_ms"], 3
            )
            results["load_average"] = os.getloadavg()

        console.print("fixed request rates")
        steps, best = run_rates(systems, rate_seconds, rates)
        results["fixed_rates"] = steps
        results["max_sustained_rps"] = best

        console.print("exact-cache hits")
        gw = next(s for s in systems if s.name == "gateway")
        cached = Target.chat(gw.base_url, gw.key, MODEL, temperature=0, max_tokens=16)
        asyncio.run(closed_loop(cached, 1))
        results["cache_hit"] = asyncio.run(closed_loop(cached, requests_c1)).summary()

        console.print("streaming")
        set_chunk_delay(mock, STREAM_DELAY_MS)
        stream_rows: dict[str, dict[str, Any]] = {}
        for system in systems:
            target = overhead_target(system)
            target = Target.chat(
                system.base_url, system.key, MODEL,
                {"x-cache-bypass": "1"} if system.name == "gateway" else None,
                max_tokens=STREAM_CHUNKS, stream=True,
            )  # fmt: skip
            asyncio.run(streaming(target, 5))
            stream_rows[system.name] = asyncio.run(streaming(target, stream_requests)).summary()
        for name, row in stream_rows.items():
            if name != "direct":
                added(row, stream_rows["direct"], ("ttft_p50_ms", "ttft_p99_ms", "gap_mean_ms"))
        results["streaming"] = stream_rows
        set_chunk_delay(mock, 0)

        if args.soak:
            # A steady rate the gateway sustains here, so the soak measures memory
            # over time rather than overload.
            soak_rate = args.soak_rate or max(5.0, 0.5 * (best.get("gateway") or 10))
            console.print(f"soak: {args.soak_seconds:.0f} s at {soak_rate:.0f}/s")
            start_rss = gw.rss_mb()
            soak = asyncio.run(open_loop(overhead_target(gw), soak_rate, args.soak_seconds))
            results["soak"] = {
                "seconds": args.soak_seconds,
                "rate": soak_rate,
                **soak.summary(),
                "rss_start_mb": start_rss,
                "rss_end_mb": gw.rss_mb(),
            }

        for system in systems:
            if system.name in rss:
                rss[system.name]["end"] = system.rss_mb()
        results["rss_mb"] = rss

    results["acceptance"] = acceptance(results)
    for path in write(results, args.out):
        console.print(f"wrote {path}")
    console.print((args.out / "gateway.md").read_text())


def acceptance(results: dict[str, Any]) -> list[dict[str, Any]]:
    c1 = results["concurrency_1"]
    best = results["max_sustained_rps"]
    if "litellm" not in c1:
        return []
    gw_added, lite_added = c1["gateway"]["added_p50_ms"], c1["litellm"]["added_p50_ms"]
    gw_rate, lite_rate = best.get("gateway") or 0, best.get("litellm") or 0
    return [
        {
            "what": "gateway added p50 at concurrency 1 <= 1/3 of LiteLLM's",
            "passed": gw_added <= lite_added / 3,
            "detail": f"{gw_added:.2f} ms vs {lite_added:.2f} ms",
        },
        {
            "what": "gateway sustained rate >= 3x LiteLLM's",
            "passed": lite_rate > 0 and gw_rate >= 3 * lite_rate,
            "detail": f"{gw_rate} vs {lite_rate} req/s",
        },
    ]


if __name__ == "__main__":
    main()
