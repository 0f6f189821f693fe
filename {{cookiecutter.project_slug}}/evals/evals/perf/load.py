"""Load generation: streamed chat completions, closed-loop concurrency and seeded
Poisson arrivals (open loop), with warm-up first."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from evals.perf.metrics import RequestRecord


@dataclass
class StreamTarget:
    """Where and how to send the streamed requests."""

    base_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    max_tokens: int = 32
    timeout_s: float = 120.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra_body,
        }


def _text_of(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return str(delta.get("content") or delta.get("reasoning_content") or "")


async def stream_one(
    http: httpx.AsyncClient,
    target: StreamTarget,
    messages: list[dict[str, Any]],
    t0: float,
) -> RequestRecord:
    """Send one streamed request; timestamps are relative to `t0` (perf_counter)."""
    sent = time.perf_counter()
    record = RequestRecord(start_s=sent - t0)
    last_text_at: float | None = None
    text_chunks = 0
    try:
        async with http.stream(
            "POST",
            f"{target.base_url.rstrip('/')}/chat/completions",
            json=target.body(messages),
            headers=target.headers,
            timeout=target.timeout_s,
        ) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                record.error = f"HTTP {response.status_code}: {body[:200]}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if "error" in chunk:
                    record.error = f"stream error: {str(chunk['error'])[:200]}"
                    return record
                if _text_of(chunk):
                    text_chunks += 1
                    if last_text_at is None:
                        record.ttft_s = now - sent
                    else:
                        record.itl_s.append(now - last_text_at)
                    last_text_at = now
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    record.output_tokens = int(usage["completion_tokens"])
                    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    record.tokens_from_usage = True
        record.e2e_s = time.perf_counter() - sent
        if record.output_tokens is None:
            # No usage in the stream: fall back to chunk count (flagged in the report).
            record.output_tokens = text_chunks
        if record.ttft_s is None:
            record.error = "stream ended without generated text"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:200]
    return record


Messages = list[dict[str, Any]]
OnDone = Callable[[RequestRecord], None]


async def warm_up(
    http: httpx.AsyncClient, target: StreamTarget, prompts: Sequence[Messages], n: int
) -> list[RequestRecord]:
    t0 = time.perf_counter()
    return [await stream_one(http, target, prompts[i % len(prompts)], t0) for i in range(n)]


async def run_closed_loop(
    http: httpx.AsyncClient,
    target: StreamTarget,
    prompts: Sequence[Messages],
    *,
    num_requests: int,
    concurrency: int,
    on_done: OnDone | None = None,
) -> tuple[list[RequestRecord], float]:
    """`num_requests` requests, at most `concurrency` in flight (vLLM bench's
    `--max-concurrency N --request-rate inf`). Returns records and duration."""
    semaphore = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(i: int) -> RequestRecord:
        async with semaphore:
            record = await stream_one(http, target, prompts[i % len(prompts)], t0)
        if on_done:
            on_done(record)
        return record

    records = await asyncio.gather(*(one(i) for i in range(num_requests)))
    return list(records), time.perf_counter() - t0


def poisson_arrivals(rate: float, n: int, seed: int) -> list[float]:
    """Arrival offsets (seconds) of a Poisson process: exponential gaps with mean 1/rate."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    gaps[0] = 0.0
    return [float(x) for x in np.cumsum(gaps)]


async def run_open_loop(
    http: httpx.AsyncClient,
    target: StreamTarget,
    prompts: Sequence[Messages],
    *,
    num_requests: int,
    rate: float,
    seed: int,
    max_concurrency: int | None = None,
    on_done: OnDone | None = None,
) -> tuple[list[RequestRecord], float]:
    """Requests arrive at seeded Poisson times whether or not earlier ones finished."""
    arrivals = poisson_arrivals(rate, num_requests, seed)
    semaphore = asyncio.Semaphore(max_concurrency or num_requests)
    t0 = time.perf_counter()

    async def one(i: int) -> RequestRecord:
        delay = arrivals[i] - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        async with semaphore:
            record = await stream_one(http, target, prompts[i % len(prompts)], t0)
        if on_done:
            on_done(record)
        return record

    records = await asyncio.gather(*(one(i) for i in range(num_requests)))
    return list(records), time.perf_counter() - t0
