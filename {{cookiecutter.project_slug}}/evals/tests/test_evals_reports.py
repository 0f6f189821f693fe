"""Reports built from results: Markdown, self-contained HTML with plots, and compare."""

from __future__ import annotations

import re

from evals.compare import render_comparison
from evals.perf.metrics import SLO, PerfReport, RequestRecord, summarise_scenario
from evals.report.writer import load_report, write_report
from evals.results import Report


def perf_report(ttft: float) -> Report:
    records = [
        RequestRecord(
            start_s=0.0,
            ttft_s=ttft,
            e2e_s=ttft + 0.3,
            itl_s=[0.1, 0.1, 0.1],
            output_tokens=4,
            prompt_tokens=5,
            tokens_from_usage=True,
        )
        for _ in range(4)
    ]
    scenarios = [
        summarise_scenario(
            records,
            name=f"endpoint concurrency={c}",
            mode="concurrency",
            duration_s=2.0 / c,
            slo=SLO(ttft_ms=200, tpot_ms=50),
            target="endpoint",
            concurrency=c,
        )
        for c in (1, 4)
    ]
    perf = PerfReport(
        slo_profile="gpu",
        slo=SLO(ttft_ms=200, tpot_ms=50),
        max_tokens=4,
        warmup_requests=1,
        seed=0,
        cache_bypass=True,
        prompts="smoke.jsonl",
        scenarios=scenarios,
    )
    return Report(
        run_id=f"perf-{ttft}",
        created_at="now",
        kind="perf",
        endpoint="http://127.0.0.1:1/v1",
        model="m",
        perf=perf,
    )


def test_perf_report_files_and_plots(tmp_path):
    out = write_report(perf_report(0.1), tmp_path)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # latency + throughput plots
    assert not re.search(r"<(script|link|iframe)\b|(src|href)=\"(https?:)?//", html)
    markdown = (out / "report.md").read_text()
    assert "TTFT ms p50/p90/p99" in markdown and "endpoint concurrency=4" in markdown
    # goodput: TTFT 100 ms meets 200 ms, TPOT 100 ms misses 50 ms -> nobody is good
    assert load_report("latest", tmp_path).perf.scenarios[0].goodput == 0.0


def test_compare_shows_perf_changes(tmp_path):
    write_report(perf_report(0.1), tmp_path)
    write_report(perf_report(0.2), tmp_path)
    text = render_comparison(load_report("perf-0.1", tmp_path), load_report("perf-0.2", tmp_path))
    assert re.search(
        r"\| endpoint concurrency=1 \| TTFT p50 ms \| 100\.00 \| 200\.00 \| \+100\.0% \|", text
    )
