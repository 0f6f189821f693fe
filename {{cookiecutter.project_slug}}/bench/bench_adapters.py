"""LoRA adapters on the transformers backend: memory per loaded adapter, and throughput
when one or two adapters are busy at once (docs/adapters.md has the figures).

    python bench/bench_adapters.py --adapter adapters/codeword [--requests 8 --tokens 32]

Starts one model service (the default model from MODELS_DIR, MODEL_BACKEND=transformers)
with run-time loading on, loads the adapter twice (as `a` and `b`, from copies in a
temporary ADAPTERS_DIR), and measures the server's resident memory after each load (each
engine warmed by a request first) and the completion tokens per second of the same
burst of requests sent to the base, to `a` alone, and split between `a` and `b`.
Every request generates exactly `--tokens` tokens (ignore_eos), greedy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from tests.support.models import LLM_ID, ModelServer, default_models_dir  # noqa: E402

QUESTION = "Write a short story about a lighthouse keeper."


async def burst(base_url: str, models: list[str], requests: int, tokens: int) -> float:
    """Completion tokens per second of `requests` concurrent requests, spread over `models`."""
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def one(model: str) -> int:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(models[i % len(models)]) for i in range(requests)))
        return sum(counts) / (time.perf_counter() - started)


def server_rss_mib(server: ModelServer) -> float:
    process = psutil.Process(server.pid)
    processes = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 2**20


async def measure(server: ModelServer, root: Path, requests: int, tokens: int) -> dict:
    url = server.base_url
    results: dict = {"requests": requests, "tokens": tokens}
    await burst(url, [LLM_ID], 2, 4)  # warm the base engine
    results["rss_base_mib"] = server_rss_mib(server)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for name in ("a", "b"):
            body = {"lora_name": name, "lora_path": str(root / name)}
            (await client.post("/v1/load_lora_adapter", json=body)).raise_for_status()
            await burst(url, [name], 2, 4)
            results[f"rss_with_{name}_mib"] = server_rss_mib(server)
    await burst(url, [LLM_ID, "a", "b"], 3, 4)
    for label, models in (("base", [LLM_ID]), ("one_adapter", ["a"]), ("two_adapters", ["a", "b"])):
        results[f"tokens_per_s_{label}"] = await burst(url, models, requests, tokens)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="an adapter folder")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "adapters"
        for name in ("a", "b"):
            shutil.copytree(args.adapter, root / name)
        env = {
            "ADAPTERS_DIR": str(root),
            "MODEL_ALLOW_RUNTIME_LORA_UPDATING": "true",
            "MODEL_MAX_NUM_SEQS": str(args.requests),
            "MODEL_KV_CACHE_GIB": "0.25",
            "MODEL_LORA_KV_CACHE_GIB": "0.25",
        }
        models_dir = default_models_dir()
        server = ModelServer("bench-adapters", Path(temp), models_dir, LLM_ID, env=env).start()
        try:
            results = asyncio.run(measure(server, root, args.requests, args.tokens))
        finally:
            server.stop()
    results["load_average"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
