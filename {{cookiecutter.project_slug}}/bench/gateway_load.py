"""Load generation for the gateway benchmark: closed loop, open loop at a fixed rate,
and streaming (time to first token, gaps between chunks). aiohttp on uvloop keeps the
client cheap, so on a small machine it is not the bottleneck it would be with a
heavier client."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    sent: int = 0
    duration: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        return {
            "requests": self.sent,
            "errors": self.errors,
            "achieved_rps": round(len(self.latencies) / self.duration, 1) if self.duration else 0,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p90_ms": round(float(np.percentile(lat, 90)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "mean_ms": round(float(np.mean(lat)), 3),
            "error_samples": self.error_samples[:3],
        }


@dataclass
class Target:
    url: str
    headers: dict[str, str]
    body: bytes

    @classmethod
    def chat(
        cls,
        base_url: str,
        key: str,
        model: str,
        extra_headers: dict[str, str] | None = None,
        **params: Any,
    ) -> Target:
        body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], **params}
        headers = {
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            **(extra_headers or {}),
        }
        return cls(f"{base_url}/v1/chat/completions", headers, orjson.dumps(body))


def session(limit: int = 1024) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=15),
    )


async def _one(
    http: aiohttp.ClientSession, target: Target, result: LoadResult, start: float
) -> None:
    try:
        async with http.request(
            "GET" if not target.body else "POST",
            target.url,
            data=target.body,
            headers=target.headers,
        ) as response:
            await response.read()
            if response.status != 200:
                result.errors += 1
                result.error_samples.append(f"HTTP {response.status}")
                return
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.errors += 1
        result.error_samples.append(type(exc).__name__)
        return
    result.latencies.append(time.perf_counter() - start)


async def closed_loop(target: Target, requests: int, concurrency: int = 1) -> LoadResult:
    result = LoadResult()
    remaining = requests

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result.sent += 1
            await _one(http, target, result, time.perf_counter())

    async with session() as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        result.duration = time.perf_counter() - started
    return result


async def open_loop(target: Target, rate: float, seconds: float) -> LoadResult:
    """Send at a fixed rate whatever the answers; latency counts from the planned send
    time, so a server falling behind shows as latency (no coordinated omission)."""
    result = LoadResult()
    total = int(rate * seconds)
    async with session() as http:
        tasks = []
        started = time.perf_counter()
        for index in range(total):
            planned = started + index / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.sent += 1
            tasks.append(asyncio.create_task(_one(http, target, result, planned)))
        await asyncio.gather(*tasks)
        result.duration = max(seconds, time.perf_counter() - started)
    return result


@dataclass
class StreamResult:
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            return (
                round(float(np.percentile(np.array(values) * 1000, q)), 3)
                if values
                else float("nan")
            )

        return {
            "requests": len(self.ttft) + self.errors,
            "errors": self.errors,
            "ttft_p50_ms": pct(self.ttft, 50),
            "ttft_p99_ms": pct(self.ttft, 99),
            "gap_p50_ms": pct(self.gaps, 50),
            "gap_p99_ms": pct(self.gaps, 99),
            "gap_mean_ms": round(float(np.mean(self.gaps) * 1000), 3)
            if self.gaps
            else float("nan"),
            "total_p50_ms": pct(self.totals, 50),
            "content_chunks_mean": round(float(np.mean(self.chunks)), 1) if self.chunks else 0,
        }


async def streaming(target: Target, requests: int) -> StreamResult:
    """One stream at a time; times each content event as its bytes arrive."""
    result = StreamResult()
    async with session() as http:
        for _ in range(requests):
            start = time.perf_counter()
            arrivals: list[float] = []
            buffer = b""
            try:
                async with http.post(
                    target.url, data=target.body, headers=target.headers
                ) as response:
                    if response.status != 200:
                        result.errors += 1
                        await response.read()
                        continue
                    async for chunk in response.content.iter_any():
                        now = time.perf_counter()
                        buffer += chunk
                        while b"\n\n" in buffer:
                            event, buffer = buffer.split(b"\n\n", 1)
                            if b'"content":"' in event and b'"content":""' not in event:
                                arrivals.append(now)
            except (aiohttp.ClientError, TimeoutError):
                result.errors += 1
                continue
            if not arrivals:
                result.errors += 1
                continue
            result.ttft.append(arrivals[0] - start)
            result.gaps.extend(b - a for a, b in itertools.pairwise(arrivals))
            result.totals.append(time.perf_counter() - start)
            result.chunks.append(len(arrivals))
    return result
