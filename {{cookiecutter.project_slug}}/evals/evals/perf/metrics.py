"""Perf metric definitions (the same as `vllm bench serve`).

- TTFT: request sent -> first streamed chunk carrying generated text.
- TPOT (per request): (E2E - TTFT) / (output tokens - 1).
- ITL: every gap between consecutive text chunks, pooled over all requests.
- E2E: request sent -> stream finished.
- Output tokens come from the server's streamed `usage` (`stream_options.include_usage`).
- Goodput: requests whose own TTFT and TPOT meet the SLO, per second of the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

PERCENTILES = (50, 90, 95, 99)

DEFINITIONS = {
    "ttft": "time from sending the request to the first streamed chunk with generated text",
    "tpot": "per request (E2E - TTFT) / (output tokens - 1); requests with 1 token excluded",
    "itl": "every gap between consecutive text chunks, pooled over all requests",
    "e2e": "time from sending the request to the end of the stream",
    "output_throughput": "output tokens (from streamed usage) of successful requests / duration",
    "request_throughput": "successful requests / duration",
    "goodput": "successful requests whose own TTFT and TPOT meet the SLO / duration",
    "duration": "first request sent to last response finished (warm-up excluded)",
}


class SLO(BaseModel):
    ttft_ms: float
    tpot_ms: float


SLO_PROFILES = {
    "gpu": SLO(ttft_ms=200.0, tpot_ms=50.0),
    "cpu": SLO(ttft_ms=2000.0, tpot_ms=250.0),
}


class RequestRecord(BaseModel):
    start_s: float
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = Field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tokens_from_usage: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None and self.e2e_s is not None

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.output_tokens is None or self.output_tokens < 2:
            return None
        assert self.e2e_s is not None and self.ttft_s is not None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def meets(self, slo: SLO) -> bool:
        if not self.ok or self.ttft_s is None:
            return False
        tpot = self.tpot_s
        return self.ttft_s * 1000 <= slo.ttft_ms and (tpot is None or tpot * 1000 <= slo.tpot_ms)


class Distribution(BaseModel):
    """Milliseconds."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float


def distribution_ms(values_s: Sequence[float]) -> Distribution | None:
    if not values_s:
        return None
    arr = np.asarray(values_s, dtype=float) * 1000.0
    p50, p90, p95, p99 = (float(np.percentile(arr, q)) for q in PERCENTILES)
    return Distribution(
        n=int(arr.size),
        mean=float(arr.mean()),
        std=float(arr.std()),
        min=float(arr.min()),
        max=float(arr.max()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
    )


class ScenarioResult(BaseModel):
    name: str
    target: str = "endpoint"
    mode: str
    concurrency: int | None = None
    rate: float | None = None
    num_requests: int
    completed: int
    failed: int
    error_rate: float
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    goodput: float
    good_fraction: float
    total_output_tokens: int
    total_input_tokens: int
    tokens_from_usage: float
    ttft_ms: Distribution | None = None
    tpot_ms: Distribution | None = None
    itl_ms: Distribution | None = None
    e2e_ms: Distribution | None = None
    errors: dict[str, int] = Field(default_factory=dict)
    #: raw per-request samples (seconds) for plots
    ttft_samples_s: list[float] = Field(default_factory=list)
    itl_samples_s: list[float] = Field(default_factory=list)


def summarise_scenario(
    records: Sequence[RequestRecord],
    *,
    name: str,
    mode: str,
    duration_s: float,
    slo: SLO,
    target: str = "endpoint",
    concurrency: int | None = None,
    rate: float | None = None,
) -> ScenarioResult:
    ok = [r for r in records if r.ok]
    duration = max(duration_s, 1e-9)
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    good = sum(1 for r in ok if r.meets(slo))
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [t for r in ok if (t := r.tpot_s) is not None]
    itls = [gap for r in ok for gap in r.itl_s]
    e2es = [r.e2e_s for r in ok if r.e2e_s is not None]
    errors = Counter((r.error or "incomplete stream")[:120] for r in records if not r.ok)
    return ScenarioResult(
        name=name,
        target=target,
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        num_requests=len(records),
        completed=len(ok),
        failed=len(records) - len(ok),
        error_rate=(len(records) - len(ok)) / len(records) if records else 0.0,
        duration_s=duration_s,
        request_throughput=len(ok) / duration,
        output_throughput=out_tokens / duration,
        total_token_throughput=(out_tokens + in_tokens) / duration,
        goodput=good / duration,
        good_fraction=good / len(records) if records else 0.0,
        total_output_tokens=out_tokens,
        total_input_tokens=in_tokens,
        tokens_from_usage=(sum(r.tokens_from_usage for r in ok) / len(ok)) if ok else 0.0,
        ttft_ms=distribution_ms(ttfts),
        tpot_ms=distribution_ms(tpots),
        itl_ms=distribution_ms(itls),
        e2e_ms=distribution_ms(e2es),
        errors=dict(errors),
        ttft_samples_s=ttfts,
        itl_samples_s=itls,
    )


class BufferingCheck(BaseModel):
    """Compares the endpoint with the model service called directly: a proxy that buffers
    SSE raises TTFT while the gaps between chunks shrink."""

    endpoint_ttft_p50_ms: float
    direct_ttft_p50_ms: float
    endpoint_itl_p50_ms: float
    direct_itl_p50_ms: float
    buffered: bool
    rule: str = (
        "buffered when endpoint TTFT p50 > direct TTFT p50 + max(25%, 50 ms) "
        "and endpoint ITL p50 < 50% of direct ITL p50"
    )


def buffering_check(endpoint: ScenarioResult, direct: ScenarioResult) -> BufferingCheck | None:
    if not (endpoint.ttft_ms and direct.ttft_ms and endpoint.itl_ms and direct.itl_ms):
        return None
    e_ttft, d_ttft = endpoint.ttft_ms.p50, direct.ttft_ms.p50
    e_itl, d_itl = endpoint.itl_ms.p50, direct.itl_ms.p50
    buffered = e_ttft > d_ttft + max(0.25 * d_ttft, 50.0) and e_itl < 0.5 * d_itl
    return BufferingCheck(
        endpoint_ttft_p50_ms=e_ttft,
        direct_ttft_p50_ms=d_ttft,
        endpoint_itl_p50_ms=e_itl,
        direct_itl_p50_ms=d_itl,
        buffered=buffered,
    )


class PerfReport(BaseModel):
    slo_profile: str
    slo: SLO
    max_tokens: int
    warmup_requests: int
    seed: int
    cache_bypass: bool
    prompts: str
    scenarios: list[ScenarioResult] = Field(default_factory=list)
    buffering: BufferingCheck | None = None
    definitions: dict[str, str] = Field(default_factory=lambda: dict(DEFINITIONS))
