"""Write the model benchmark's JSON, Markdown table and PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# Model service benchmark",
        "",
        f"{meta['model']}, {meta['max_tokens']} output tokens per request, chat completions, "
        f"streamed; tokens counted from each server's `usage`; warm-up first; "
        f"{meta['cpus']} CPUs; started {meta['started']}.",
        "",
        "| system | dtype | concurrency | requests | failed | output tok/s | mean out tokens "
        "| TTFT p50 (s) | TTFT p99 (s) | TPOT p50 (s) | peak RSS (MB) | tokens from |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        for level in run["levels"]:
            lines.append(
                f"| {run['system']} | {run['dtype']} | {level['concurrency']} "
                f"| {level['requests']} | {level['failed']} | {level['output_tok_per_s']:.1f} "
                f"| {level['mean_output_tokens']:.1f} | {level['ttft_p50_s']:.2f} "
                f"| {level['ttft_p99_s']:.2f} | {level['tpot_p50_s']:.3f} "
                f"| {level['peak_rss_mb']:.0f} | {level.get('tokens_from', 'usage')} |"
            )
        if run.get("error"):
            lines.append(f"| {run['system']} | {run['dtype']} | — | failed: {run['error']} |")
    lines += configurations_table(report)
    lines += structured_table(report)
    if report.get("acceptance"):
        lines += ["", "## Acceptance (float32)", ""]
        lines += [f"- {check}" for check in report["acceptance"]]
    lines += [
        "",
        "TTFT: time to the first streamed content token. TPOT: (latency - TTFT) / "
        "(output tokens - 1) per request. Peak RSS: the server process and its children. "
        "Tokens from `tokenizer`: the server sent no usage (it ignores "
        "`stream_options`), so its streamed text was tokenized.",
        "",
    ]
    return "\n".join(lines)


def level_of(run: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in run["levels"] if lv["concurrency"] == concurrency), None)


def configurations_table(report: dict[str, Any]) -> list[str]:
    """One row per system and configuration: speed, memory, load time and quality."""
    rows = []
    for run in report["runs"]:
        rates = []
        for concurrency in (1, 16, 64):
            level = level_of(run, concurrency)
            rates.append(f"{level['output_tok_per_s']:.1f}" if level else "—")
        first = run["levels"][0] if run["levels"] else None
        ttft = f"{first['ttft_p50_s']:.2f}" if first else "—"
        rss = max((lv["peak_rss_mb"] for lv in run["levels"]), default=0)
        result = run.get("quality")
        quality = (
            f"{result['exact_match']:.3f} ± {result['stderr']:.3f} "
            f"({result['correct']}/{result['questions']})"
            if result
            else "—"
        )
        rows.append(
            f"| {run['system']} | {run['dtype']} | {' | '.join(rates)} | {ttft} "
            f"| {rss:.0f} | {run.get('load_s', '—')} | {quality} |"
        )
    return [
        "",
        "## Configurations: speed against quality",
        "",
        f"Recommended on this CPU (`MODEL_DTYPE=auto`, `MODEL_QUANTIZATION=auto`): "
        f"**{report['meta'].get('recommended', 'float32')}**. Quality: the quality set's "
        "exact match ± its standard error.",
        "",
        "| system | configuration | tok/s c=1 | tok/s c=16 | tok/s c=64 | TTFT p50 (s) "
        "| peak RSS (MB) | load (s) | quality |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]


def structured_table(report: dict[str, Any]) -> list[str]:
    """json_schema against the same request unconstrained, per system and concurrency."""
    rows = []
    for run in report["runs"]:
        free = {lv["concurrency"]: lv["output_tok_per_s"] for lv in run["levels"]}
        for level in run.get("structured", []):
            base = free.get(level["concurrency"])
            cost = f"{1 - level['output_tok_per_s'] / base:.0%}" if base else "—"
            rows.append(
                f"| {run['system']} | {level['concurrency']} | {base or '—'} "
                f"| {level['output_tok_per_s']:.1f} | {cost} | {level['failed']} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Structured outputs (json_schema, float32)",
        "",
        "| system | concurrency | unconstrained tok/s | json_schema tok/s | grammar cost "
        "| failed |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for run in report["runs"]:
        levels = run["levels"]
        if not levels:
            continue
        axis.plot(
            [lv["concurrency"] for lv in levels],
            [lv["output_tok_per_s"] for lv in levels],
            marker="o",
            linestyle="-" if run["dtype"] == "float32" else "--",
            label=f"{run['system']} ({run['dtype']})",
        )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent requests")
    axis.set_ylabel("output tokens / s")
    axis.set_title(f"{report['meta']['model']} on {report['meta']['cpus']} CPUs")
    axis.grid(True, alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def acceptance(report: dict[str, Any]) -> list[str]:
    """The issue's throughput bars, checked on the float32 rows of this run."""

    def rate(system: str, concurrency: int) -> float | None:
        for run in report["runs"]:
            if run["system"] == system and run["dtype"] == "float32":
                for level in run["levels"]:
                    if level["concurrency"] == concurrency:
                        return float(level["output_tok_per_s"])
        return None

    checks = []
    for run in report["runs"]:
        if run["system"] != "transformers" or run["dtype"] != "float32":
            continue
        for level in run.get("structured", []):
            base = rate("transformers", level["concurrency"])
            if level["concurrency"] == 16 and base:
                cost = 1 - level["output_tok_per_s"] / base
                verdict = "met" if cost <= 0.15 else "NOT met"
                checks.append(
                    f"c=16: json_schema costs the transformers backend {cost:.0%} "
                    f"(≤ 15%: {verdict})"
                )
    checks += recommended_checks(report)
    ours16, vllm16 = rate("transformers", 16), rate("vllm", 16)
    if ours16 is not None and vllm16:
        share = ours16 / vllm16
        verdict = "met" if share >= 0.6 else "NOT met"
        checks.append(f"c=16: transformers backend is {share:.0%} of vLLM-CPU (≥ 60%: {verdict})")
    for concurrency in (16, 64):
        ours, theirs = rate("transformers", concurrency), rate("transformers-serve", concurrency)
        if ours is not None and theirs:
            verdict = "met" if ours >= theirs else "NOT met"
            checks.append(
                f"c={concurrency}: transformers backend {ours:.1f} vs `transformers serve` "
                f"{theirs:.1f} tok/s (≥: {verdict})"
            )
    return checks


def recommended_checks(report: dict[str, Any]) -> list[str]:
    """The recommended configuration against vLLM-CPU float32 (speed) and our float32
    (quality within one standard error)."""
    runs = {(run["system"], run["dtype"]): run for run in report["runs"]}
    recommended = runs.get(("transformers", report["meta"].get("recommended", "float32")))
    vllm, float32 = runs.get(("vllm", "float32")), runs.get(("transformers", "float32"))
    if recommended is None:
        return []
    checks = []
    for concurrency in (16, 64):
        ours = level_of(recommended, concurrency)
        theirs = level_of(vllm, concurrency) if vllm else None
        if ours and theirs and theirs["output_tok_per_s"]:
            share = ours["output_tok_per_s"] / theirs["output_tok_per_s"]
            verdict = "met" if share >= 1.0 else "NOT met"
            checks.append(
                f"c={concurrency}: recommended ({recommended['dtype']}) is {share:.2f}x "
                f"vLLM-CPU float32 (≥ 1.0x: {verdict})"
            )
    mine, base = recommended.get("quality"), float32.get("quality") if float32 else None
    if mine and base:
        close = mine["exact_match"] >= base["exact_match"] - base["stderr"]
        verdict = "met" if close else "NOT met"
        checks.append(
            f"quality: recommended {mine['exact_match']:.3f} vs float32 "
            f"{base['exact_match']:.3f} ± {base['stderr']:.3f} (within 1 se: {verdict})"
        )
    return checks


def write(report: dict[str, Any], out_dir: Path, stem: str = "model_service") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report["acceptance"] = acceptance(report)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths
