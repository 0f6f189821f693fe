"""Speed and quality of the transformers backend's CPU options (dtype, int8).

A dozen short factual questions, greedy, exact match (the expected word appears in the
answer), next to the decode speed of the same engine at concurrency 8. Writes
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
sys.path.insert(0, str(ROOT / "services" / "model"))

from model_service.generation import GenerationEngine  # noqa: E402
from model_service.metrics import ServiceMetrics  # noqa: E402
from model_service.sampling import SamplingParams  # noqa: E402

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Italy?", "rome"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Spain?", "madrid"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many days are in a week?", "seven"),
    ("What is the largest planet in the solar system?", "jupiter"),
    ("What do bees make?", "honey"),
    ("What is the opposite of hot?", "cold"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is frozen water called?", "ice"),
]
ALIASES = {"seven": ("seven", "7")}


def correct(answer: str, expected: str) -> bool:
    text = answer.lower()
    return any(word in text for word in ALIASES.get(expected, (expected,)))


async def evaluate(engine: GenerationEngine) -> dict[str, Any]:
    async def ask(question: str) -> str:
        ids = engine.encode_chat([{"role": "user", "content": question}])
        parts = [d.text async for d in engine.generate(ids, SamplingParams(32, temperature=0))]
        return "".join(parts)

    answers = await asyncio.gather(*(ask(q) for q, _ in QUESTIONS))
    hits = [correct(a, e) for a, (_, e) in zip(answers, QUESTIONS, strict=True)]
    speed_ids = engine.encode_chat([{"role": "user", "content": "Write a long story."}])
    started = time.perf_counter()

    async def decode() -> int:
        params = SamplingParams(64, temperature=0, ignore_eos=True)
        last = [d async for d in engine.generate(speed_ids, params)][-1]
        return last.completion_tokens

    tokens = sum(await asyncio.gather(*(decode() for _ in range(8))))
    return {
        "exact_match": sum(hits) / len(hits),
        "correct": sum(hits),
        "questions": len(hits),
        "tok_per_s_c8": round(tokens / (time.perf_counter() - started), 2),
        "answers": answers,
    }


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
            f"{variant}: {result['correct']}/{result['questions']}, {result['tok_per_s_c8']} tok/s"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Transformers backend: CPU options, speed and quality",
        "",
        f"SmolLM2-135M-Instruct, {len(QUESTIONS)} questions, greedy, exact match; "
        "speed: 8 concurrent requests x 64 tokens.",
        "",
        "| variant | exact match | tok/s (c=8) |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {r['variant']} | {r['correct']}/{r['questions']} | {r['tok_per_s_c8']:.1f} |"
        for r in rows
    ]
    (args.out / "model_quality.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
