"""Perf metric definitions on a scripted upstream with known delays.

These check definitions (which chunk starts TTFT, what TPOT divides by, which gaps ITL
pools), with tolerances for scheduling noise; they are not performance thresholds.
"""

from __future__ import annotations

import httpx
import pytest

from evals.perf.load import (
    StreamTarget,
    poisson_arrivals,
    run_closed_loop,
    run_open_loop,
    warm_up,
)
from evals.perf.metrics import SLO, summarise_scenario
from evals.perf.suite import PerfOptions, run_perf
from evals.settings import EvalsSettings

TTFT = 0.30
GAPS = [0.05, 0.15, 0.25]
NOISE = 0.1  # seconds of scheduling slack on a busy 2-core machine
PROMPTS = [[{"role": "user", "content": "hello"}]]


def target(upstream) -> StreamTarget:
    return StreamTarget(base_url=upstream.v1, model="scripted", headers={"x-cache-bypass": "1"})


async def test_ttft_tpot_itl_follow_the_script(scripted_upstream):
    # The role-only chunk arrives at once; TTFT must wait for the first text chunk.
    upstream = scripted_upstream(ttft=TTFT, gaps=GAPS)
    async with httpx.AsyncClient() as http:
        await warm_up(http, target(upstream), PROMPTS, 1)
        records, duration = await run_closed_loop(
            http, target(upstream), PROMPTS, num_requests=2, concurrency=1
        )
    for record in records:
        assert record.ok, record.error
        assert record.output_tokens == 4 and record.tokens_from_usage
        assert record.ttft_s == pytest.approx(TTFT, abs=NOISE)
        assert record.itl_s == pytest.approx(GAPS, abs=NOISE)
        # TPOT = (E2E - TTFT) / (tokens - 1) = sum(GAPS) / 3 plus the tail after the last
        assert record.tpot_s == pytest.approx(sum(GAPS) / 3, abs=NOISE)
        assert record.tpot_s == (record.e2e_s - record.ttft_s) / 3
        assert record.e2e_s == pytest.approx(TTFT + sum(GAPS), abs=2 * NOISE)
    summary = summarise_scenario(
        records, name="s", mode="concurrency", duration_s=duration, slo=SLO(ttft_ms=1, tpot_ms=1)
    )
    # ITL pools every gap of every request: 2 requests x 3 gaps
    assert summary.itl_ms is not None and summary.itl_ms.n == 6
    assert summary.itl_ms.p50 == pytest.approx(150, abs=NOISE * 1000)
    assert summary.tpot_ms is not None and summary.tpot_ms.n == 2
    assert summary.total_output_tokens == 8
    assert summary.output_throughput == pytest.approx(8 / duration)
    assert summary.request_throughput == pytest.approx(2 / duration)
    assert summary.goodput == 0.0  # a 1 ms SLO is met by nobody
    generous = summarise_scenario(
        records,
        name="s",
        mode="concurrency",
        duration_s=duration,
        slo=SLO(ttft_ms=5000, tpot_ms=5000),
    )
    assert generous.goodput == pytest.approx(2 / duration) and generous.good_fraction == 1.0


async def test_request_carries_usage_option_and_cache_bypass(scripted_upstream):
    upstream = scripted_upstream(ttft=0.01, gaps=[0.01])
    async with httpx.AsyncClient() as http:
        await run_closed_loop(http, target(upstream), PROMPTS, num_requests=1, concurrency=1)
    seen = upstream.stats()["bodies"][0]
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert seen["body"]["temperature"] == 0.0
    assert seen["headers"]["x-cache-bypass"] == "1"


async def test_without_streamed_usage_tokens_are_counted_from_chunks(scripted_upstream):
    upstream = scripted_upstream(ttft=0.01, gaps=[0.01, 0.01], usage=False)
    async with httpx.AsyncClient() as http:
        records, _ = await run_closed_loop(
            http, target(upstream), PROMPTS, num_requests=1, concurrency=1
        )
    assert records[0].output_tokens == 3 and not records[0].tokens_from_usage


async def test_closed_loop_never_exceeds_the_concurrency(scripted_upstream):
    upstream = scripted_upstream(ttft=0.1, gaps=[0.1])
    async with httpx.AsyncClient() as http:
        records, _ = await run_closed_loop(
            http, target(upstream), PROMPTS, num_requests=6, concurrency=2
        )
    intervals = [(r.start_s, r.start_s + (r.e2e_s or 0)) for r in records]
    for start, _ in intervals:
        in_flight = sum(1 for s, e in intervals if s <= start < e)
        assert in_flight <= 2


def test_poisson_arrivals_are_seeded_with_the_right_mean_gap():
    first = poisson_arrivals(4.0, 2000, seed=3)
    assert first == poisson_arrivals(4.0, 2000, seed=3)
    assert first != poisson_arrivals(4.0, 2000, seed=4)
    assert first[0] == 0.0 and first == sorted(first)
    assert first[-1] / (len(first) - 1) == pytest.approx(0.25, rel=0.1)


async def test_open_loop_sends_at_the_scheduled_times(scripted_upstream):
    upstream = scripted_upstream(ttft=0.01, gaps=[0.01])
    arrivals = poisson_arrivals(10.0, 5, seed=1)
    async with httpx.AsyncClient() as http:
        records, _ = await run_open_loop(
            http, target(upstream), PROMPTS, num_requests=5, rate=10.0, seed=1
        )
    for record, arrival in zip(records, arrivals, strict=True):
        assert record.ok and record.start_s >= arrival - 0.005


async def test_errors_are_counted_not_measured(scripted_upstream):
    upstream = scripted_upstream(fail_first=2, fail_status=503)
    async with httpx.AsyncClient() as http:
        records, duration = await run_closed_loop(
            http, target(upstream), PROMPTS, num_requests=4, concurrency=1
        )
    summary = summarise_scenario(
        records,
        name="s",
        mode="concurrency",
        duration_s=duration,
        slo=SLO(ttft_ms=1e6, tpot_ms=1e6),
    )
    assert (summary.completed, summary.failed, summary.error_rate) == (2, 2, 0.5)
    assert summary.ttft_ms is not None and summary.ttft_ms.n == 2
    assert any("503" in message for message in summary.errors)


@pytest.mark.parametrize("endpoint_buffers", [True, False])
async def test_buffering_is_flagged_against_the_direct_model_service(
    scripted_upstream, endpoint_buffers
):
    endpoint = scripted_upstream(ttft=0.05, gaps=[0.05] * 4, buffered=endpoint_buffers)
    direct = scripted_upstream(ttft=0.05, gaps=[0.05] * 4)
    settings = EvalsSettings(base_url=endpoint.v1, model="scripted")
    options = PerfOptions(concurrencies=[1], num_requests=2, warmup=1, direct_url=direct.v1)
    report = await run_perf(settings, options)
    assert [s.target for s in report.scenarios] == ["endpoint", "direct"]
    assert report.buffering is not None
    assert report.buffering.buffered is endpoint_buffers
