"""Speed and quality of the transformers backend's CPU options (dtype, int8).

The quality set (bench/quality_set.py: 46 short factual questions, one-word answers,
exact match after normalisation, score with its standard error) asked of the engine in
process, next to the decode speed of the same engine at concurrency 8. Writes
bench/results/model_quality.{json,md}.

    python bench/model_quality.py [--variants float32 bfloat16 float32+int8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "common", ROOT / "services" / "model", ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from quality_set import MAX_TOKENS, QUESTIONS, correct, messages, normalise, score  # noqa: E402

from model_service.generation import GenerationEngine  # noqa: E402
from model_service.metrics import ServiceMetrics  # noqa: E402
from model_service.sampling import SamplingParams  # noqa: E402

__all__ = ["QUESTIONS", "correct", "evaluate", "messages", "normalise", "score"]


async def evaluate(engine: GenerationEngine) -> dict[str, Any]:
    in_flight = asyncio.Semaphore(8)  # the engine below queues at most 16

    async def ask(question: str) -> str:
        ids = engine.encode_chat(messages(question))
        params = SamplingParams(MAX_TOKENS, temperature=0)
        async with in_flight:
            return "".join([d.text async for d in engine.generate(ids, params)])

    answers = list(await asyncio.gather(*(ask(q) for _, q, _ in QUESTIONS)))
    speed_ids = engine.encode_chat([{"role": "user", "content": "Write a long story."}])
    started = time.perf_counter()

    async def decode() -> int:
        params = SamplingParams(64, temperature=0, ignore_eos=True)
        last = [d async for d in engine.generate(speed_ids, params)][-1]
        return last.completion_tokens

    tokens = sum(await asyncio.gather(*(decode() for _ in range(8))))
    return {
        **score(answers),
        "tok_per_s_c8": round(tokens / (time.perf_counter() - started), 2),
        "answers": answers,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Transformers backend: CPU options, speed and quality",
        "",
        f"SmolLM2-135M-Instruct, {len(QUESTIONS)} questions, greedy, one-word answers, "
        "exact match after normalisation; speed: 8 concurrent requests x 64 tokens.",
        "",
        "| variant | exact match | ± stderr | right | tok/s (c=8) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['variant']} | {r['exact_match']:.3f} | {r['stderr']:.3f} | "
        f"{r['correct']}/{r['questions']} | {r['tok_per_s_c8']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["float32", "bfloat16", "float32+int8"])
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("MODELS_DIR", ROOT / "models"))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    path = args.models_dir / "HuggingFaceTB--SmolLM2-135M-Instruct"
    rows = []
    for variant in args.variants:
        dtype, _, quantization = variant.partition("+")
        engine = GenerationEngine.load(
            path, dtype, ServiceMetrics(variant), 2048, 8, 8, 512, 0.25, quantization or None
        )
        try:
            result = await evaluate(engine)
        finally:
            engine.close()
        rows.append({"variant": variant, **result})
        print(
            f"{variant}: {result['correct']}/{result['questions']} "
            f"({result['exact_match']:.3f} ± {result['stderr']:.3f}), "
            f"{result['tok_per_s_c8']} tok/s"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "model_quality.md").write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
