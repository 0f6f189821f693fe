"""Closed-loop load on an OpenAI-compatible server: streamed chat completions, tokens
counted from the server's `usage`, TTFT from the first content chunk.

A server that ignores `stream_options.include_usage` (`transformers serve`) sends no
usage; its output is then counted by tokenizing the streamed text (marked in results).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
import psutil

TOPICS = [
    "a lighthouse keeper", "a robot learning to paint", "a city under the sea", "an old clock",
    "a dragon who cannot fly", "the last bookshop", "a train across the desert", "a lost cat",
    "a garden on Mars", "a violin maker", "a snowstorm in spring", "a talking tree",
    "a detective in Paris", "the first day of school", "a broken compass", "a secret recipe",
]  # fmt: skip


def prompts(count: int) -> list[str]:
    return [f"Write a long story about {TOPICS[i % len(TOPICS)]}. ({i})" for i in range(count)]


TokenCounter = Callable[[str], int]

# The structured-output row: the same story, written inside a JSON object, so the
# grammar is active at every step (`ignore_eos` keeps the output length equal).
STORY_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
    "required": ["title", "story"],
    "additionalProperties": False,
}
JSON_SCHEMA_FIELDS = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "story", "schema": STORY_SCHEMA, "strict": True},
    }
}


@dataclass
class RequestResult:
    ttft: float
    latency: float
    completion_tokens: int
    from_usage: bool = True


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    failed: int
    duration_s: float
    output_tokens: int
    output_tok_per_s: float
    mean_output_tokens: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    peak_rss_mb: float
    tokens_from: str = "usage"

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class RssSampler:
    """Peak resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for proc in [self._process, *self._process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def one_request(
    client: httpx.AsyncClient,
    model: str,
    prompt: str,
    max_tokens: int,
    ignore_eos: bool,
    count_tokens: TokenCounter,
    extra: dict[str, object] | None = None,
) -> RequestResult:
    body: dict[str, object] = {
        **(extra or {}),
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    started = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    text: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    text.append(content)
                    if ttft is None:
                        ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    latency = time.perf_counter() - started
    ttft = ttft if ttft is not None else latency
    if not tokens and text:
        return RequestResult(ttft, latency, count_tokens("".join(text)), from_usage=False)
    return RequestResult(ttft, latency, tokens)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_level(
    base_url: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    ignore_eos: bool,
    pid: int,
    count_tokens: TokenCounter,
    extra: dict[str, object] | None = None,
) -> LevelResult:
    """`requests` requests, at most `concurrency` in flight at any time."""
    queue = prompts(requests)
    results: list[RequestResult] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency + 4)
    timeout = httpx.Timeout(600.0)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal failures
            while queue:
                prompt = queue.pop()
                try:
                    results.append(
                        await one_request(
                            client, model, prompt, max_tokens, ignore_eos, count_tokens, extra
                        )
                    )
                except (httpx.HTTPError, RuntimeError):
                    failures += 1

        with RssSampler(pid) as rss:
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            duration = time.perf_counter() - started

    tokens = sum(r.completion_tokens for r in results)
    ttfts = [r.ttft for r in results]
    tpots = [
        (r.latency - r.ttft) / (r.completion_tokens - 1) for r in results if r.completion_tokens > 1
    ]
    return LevelResult(
        concurrency=concurrency,
        requests=len(results),
        failed=failures,
        duration_s=round(duration, 3),
        output_tokens=tokens,
        output_tok_per_s=round(tokens / duration, 2) if duration else 0.0,
        mean_output_tokens=round(tokens / len(results), 1) if results else 0.0,
        ttft_p50_s=round(percentile(ttfts, 50), 3),
        ttft_p99_s=round(percentile(ttfts, 99), 3),
        tpot_p50_s=round(statistics.median(tpots), 4) if tpots else float("nan"),
        peak_rss_mb=round(rss.peak_bytes / 2**20, 1),
        tokens_from="usage" if all(r.from_usage for r in results) else "tokenizer",
    )
