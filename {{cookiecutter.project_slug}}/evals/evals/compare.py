"""`evals compare A B`: metric-by-metric difference between two reports."""

from __future__ import annotations

from evals.report.markdown import table_md
from evals.report.tables import Table
from evals.results import Report


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a:+.1%}" if a else "-"


def quality_table(a: Report, b: Report) -> Table | None:
    rows = []
    b_suites = {s.name: s for s in b.suites if s.status == "ok"}
    for suite in a.suites:
        other = b_suites.get(suite.name)
        if suite.status != "ok" or other is None:
            continue
        for name, metric in suite.metrics.items():
            before = metric.summary
            after = other.metrics[name].summary if name in other.metrics else None
            if before is None or after is None:
                continue
            overlap = after.ci_low <= before.ci_high and before.ci_low <= after.ci_high
            rows.append(
                [
                    suite.name,
                    name,
                    f"{before.mean:.3f} [{before.ci_low:.3f}, {before.ci_high:.3f}]",
                    f"{after.mean:.3f} [{after.ci_low:.3f}, {after.ci_high:.3f}]",
                    f"{after.mean - before.mean:+.3f}",
                    "within noise" if overlap else "significant",
                ]
            )
    if not rows:
        return None
    return Table(
        title="Quality",
        headers=["suite", "metric", "A (95% CI)", "B (95% CI)", "B - A", "CIs"],
        rows=rows,
    )


def perf_table(a: Report, b: Report) -> Table | None:
    if a.perf is None or b.perf is None:
        return None
    b_scenarios = {s.name: s for s in b.perf.scenarios}
    rows = []
    for s in a.perf.scenarios:
        t = b_scenarios.get(s.name)
        if t is None:
            continue
        pairs = [
            ("out tok/s", s.output_throughput, t.output_throughput),
            ("req/s", s.request_throughput, t.request_throughput),
            ("goodput req/s", s.goodput, t.goodput),
        ]
        for label, dist_a, dist_b in (
            ("TTFT p50 ms", s.ttft_ms, t.ttft_ms),
            ("TPOT p50 ms", s.tpot_ms, t.tpot_ms),
            ("ITL p50 ms", s.itl_ms, t.itl_ms),
            ("E2E p99 ms", s.e2e_ms, t.e2e_ms),
        ):
            if dist_a is not None and dist_b is not None:
                field = "p99" if "p99" in label else "p50"
                pairs.append((label, getattr(dist_a, field), getattr(dist_b, field)))
        rows += [[s.name, label, f"{x:.2f}", f"{y:.2f}", _pct(x, y)] for label, x, y in pairs]
    if not rows:
        return None
    return Table(title="Performance", headers=["scenario", "metric", "A", "B", "change"], rows=rows)


def render_comparison(a: Report, b: Report) -> str:
    parts = [f"## Evals comparison: A `{a.run_id}` → B `{b.run_id}`", ""]
    tables = [t for t in (quality_table(a, b), perf_table(a, b)) if t is not None]
    if not tables:
        parts.append("No metrics in common.")
    parts += [table_md(t) for t in tables]
    return "\n".join(parts)
