"""Write the gateway benchmark's results: JSON, a Markdown table, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLORS = {"direct": "tab:blue", "gateway": "tab:green", "litellm": "tab:red"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Gateway benchmark",
        "",
        f"Run {results['started']} on {results['machine']['cpus']} CPUs "
        f"({results['machine']['platform']}). One worker per system, same mock upstream, "
        "same machine, one run. The gateway has API keys, rate limits and the exact cache on "
        "(overhead requests are cache-bypassed); LiteLLM "
        f"{results['config']['litellm_version']} runs with its master key only.",
        "",
        "## Added latency at concurrency 1",
        "",
        "| system | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["concurrency_1"].items():
        lines.append(
            f"| {name} | {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | "
            f"{_fmt(row.get('added_p50_ms'))} | {_fmt(row.get('added_p99_ms'))} | "
            f"{_fmt(row['achieved_rps'])} |"
        )
    lines += [
        "",
        "## Fixed request rates (open loop)",
        "",
        "Latency counts from the planned send time. Added = the system's percentile minus the "
        "direct percentile at the same rate. A rate is *sustained* when every request succeeded, "
        "at least 95 % of the rate was achieved and p99 added latency stayed under 50 ms.",
        "",
        "| rate/s | system | achieved/s | errors | p50 ms | p99 ms | added p50 ms "
        "| added p99 ms | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for step in results["fixed_rates"]:
        lines.append(
            f"| {step['rate']} | {step['system']} | {_fmt(step['achieved_rps'])} | "
            f"{step['errors']} | {_fmt(step['p50_ms'])} | {_fmt(step['p99_ms'])} | "
            f"{_fmt(step.get('added_p50_ms'))} | {_fmt(step.get('added_p99_ms'))} | "
            f"{'yes' if step.get('sustained') else 'no'} |"
        )
    lines += ["", "## Highest sustained rate", "", "| system | req/s |", "|---|---|"]
    for name, rate in results["max_sustained_rps"].items():
        lines.append(f"| {name} | {_fmt(rate)} |")
    cache = results.get("cache_hit")
    if cache:
        lines += [
            "",
            "## Exact-cache hits (gateway, concurrency 1)",
            "",
            f"p50 {_fmt(cache['p50_ms'])} ms, p99 {_fmt(cache['p99_ms'])} ms over "
            f"{cache['requests']} requests (the upstream is not called).",
        ]
    lines += [
        "",
        "## Streaming (concurrency 1)",
        "",
        f"The mock streams {results['config']['stream_chunks']} chunks "
        f"{results['config']['stream_chunk_delay_ms']} ms apart.",
        "",
        "| system | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | gap mean ms "
        "| added gap mean ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["streaming"].items():
        lines.append(
            f"| {name} | {_fmt(row['ttft_p50_ms'])} | {_fmt(row['ttft_p99_ms'])} | "
            f"{_fmt(row.get('added_ttft_p50_ms'))} | {_fmt(row['gap_mean_ms'])} | "
            f"{_fmt(row.get('added_gap_mean_ms'))} |"
        )
    soak = results.get("soak")
    if soak:
        lines += [
            "",
            "## Soak",
            "",
            f"{soak['seconds']} s at {soak['rate']} req/s through the gateway: "
            f"{soak['requests']} requests, {soak['errors']} errors, p99 {_fmt(soak['p99_ms'])} ms; "
            f"RSS {_fmt(soak['rss_start_mb'])} MB at the start, {_fmt(soak['rss_end_mb'])} MB "
            "at the end.",
        ]
    lines += ["", "## Memory", "", "| system | RSS start MB | RSS end MB |", "|---|---|---|"]
    for name, row in results["rss_mb"].items():
        lines.append(f"| {name} | {_fmt(row['start'])} | {_fmt(row['end'])} |")
    acceptance = results.get("acceptance")
    if acceptance:
        lines += ["", "## Acceptance", ""]
        for check in acceptance:
            lines.append(
                f"- {'PASS' if check['passed'] else 'FAIL'}: {check['what']} ({check['detail']})"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    systems = sorted({step["system"] for step in results["fixed_rates"]})
    for name in systems:
        steps = [s for s in results["fixed_rates"] if s["system"] == name]
        rates = [s["rate"] for s in steps]
        color = COLORS.get(name)
        left.plot(rates, [s["p50_ms"] for s in steps], "o-", color=color, label=f"{name} p50")
        left.plot(rates, [s["p99_ms"] for s in steps], "x--", color=color, label=f"{name} p99")
    left.set_xlabel("offered rate (requests/s)")
    left.set_ylabel("latency (ms)")
    left.set_yscale("log")
    left.set_title("Latency at fixed request rates")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)

    names = [n for n in results["concurrency_1"] if n != "direct"]
    added = [results["concurrency_1"][n].get("added_p50_ms") or 0 for n in names]
    sustained = [results["max_sustained_rps"].get(n) or 0 for n in names]
    bars = right.bar(names, added, color=[COLORS.get(n, "tab:gray") for n in names])
    right.set_ylabel("added p50 latency at concurrency 1 (ms)")
    right.set_title("Overhead (bars) and highest sustained rate (labels)")
    for bar, rate in zip(bars, sustained, strict=True):
        right.annotate(
            f"{rate:.0f} req/s", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center", va="bottom",
        )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "gateway.json"
    md_path = out_dir / "gateway.md"
    png_path = out_dir / "gateway.png"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    plot(results, png_path)
    return [json_path, md_path, png_path]
