"""Differences between two sets of results: `run --compare-to` (candidate against its
base model, on the same items) and `evals compare A B` (two saved reports).

Where both sides scored the same items (matched by sample id), the difference is
paired: per-item differences, their mean, standard error and bootstrap CI (see
`evals.stats.paired_difference`). Reports with no items in common fall back to
comparing the two means and whether their CIs overlap.
"""

from __future__ import annotations

from evals.report.markdown import table_md
from evals.report.tables import Table, signed_ci
from evals.results import MetricDifference, Report, SuiteResult
from evals.stats import paired_difference


def paired_values(
    base: SuiteResult, candidate: SuiteResult, metric: str
) -> tuple[list[float], list[float], int]:
    """(base values, candidate values, unpaired count) over the items both scored."""
    before = {r.id: r.metric_value(metric) for r in base.samples}
    after = {r.id: r.metric_value(metric) for r in candidate.samples}
    scored_before = {i for i, v in before.items() if v is not None}
    scored_after = {i for i, v in after.items() if v is not None}
    ids = sorted(scored_before & scored_after)
    unpaired = len(scored_before ^ scored_after)
    return [before[i] or 0.0 for i in ids], [after[i] or 0.0 for i in ids], unpaired


def metric_differences(
    base: list[SuiteResult], candidate: list[SuiteResult], *, seed: int, resamples: int
) -> list[MetricDifference]:
    """Candidate minus base for every metric both computed, paired by sample id."""
    differences = []
    before = {s.name: s for s in base if s.status == "ok"}
    for suite in candidate:
        other = before.get(suite.name)
        if suite.status != "ok" or other is None:
            continue
        for name, metric in suite.metrics.items():
            if name not in other.metrics:
                continue
            base_values, values, unpaired = paired_values(other, suite, name)
            if not values:
                continue
            differences.append(
                MetricDifference(
                    suite=suite.name,
                    metric=name,
                    base=sum(base_values) / len(base_values),
                    candidate=sum(values) / len(values),
                    difference=paired_difference(
                        values, base_values, seed=seed, resamples=resamples
                    ),
                    unpaired=unpaired,
                    gating=metric.gating and other.metrics[name].gating,
                )
            )
    return differences


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a:+.1%}" if a else "-"


def _unpaired_rows(a: Report, b: Report, paired: set[tuple[str, str]]) -> list[list[str]]:
    """Metrics without common items: the two means and whether their CIs overlap."""
    rows = []
    b_suites = {s.name: s for s in b.suites if s.status == "ok"}
    for suite in a.suites:
        other = b_suites.get(suite.name)
        if suite.status != "ok" or other is None:
            continue
        for name, metric in suite.metrics.items():
            before = metric.summary
            after = other.metrics[name].summary if name in other.metrics else None
            if before is None or after is None or (suite.name, name) in paired:
                continue
            overlap = after.ci_low <= before.ci_high and before.ci_low <= after.ci_high
            rows.append(
                [
                    suite.name,
                    name,
                    f"{before.mean:.3f} [{before.ci_low:.3f}, {before.ci_high:.3f}]",
                    f"{after.mean:.3f} [{after.ci_low:.3f}, {after.ci_high:.3f}]",
                    f"{after.mean - before.mean:+.3f}",
                    "-",
                    "CIs overlap: within noise" if overlap else "CIs apart: significant",
                ]
            )
    return rows


def quality_table(a: Report, b: Report, *, seed: int = 1234, resamples: int = 1000) -> Table | None:
    differences = metric_differences(a.suites, b.suites, seed=seed, resamples=resamples)
    a_means = {(s.name, n): m.summary for s in a.suites for n, m in s.metrics.items()}
    rows = []
    for d in differences:
        before = a_means.get((d.suite, d.metric))
        after = next((s.metrics[d.metric].summary for s in b.suites if s.name == d.suite), None)
        if before is None or after is None:
            continue
        rows.append(
            [
                d.suite,
                d.metric,
                f"{before.mean:.3f} [{before.ci_low:.3f}, {before.ci_high:.3f}]",
                f"{after.mean:.3f} [{after.ci_low:.3f}, {after.ci_high:.3f}]",
                f"{after.mean - before.mean:+.3f}",
                signed_ci(d.difference.ci_low, d.difference.ci_high),
                "within noise" if d.verdict == "within noise" else "significant",
            ]
        )
    rows += _unpaired_rows(a, b, {(d.suite, d.metric) for d in differences})
    if not rows:
        return None
    return Table(
        title="Quality",
        headers=[
            "suite",
            "metric",
            "A (95% CI)",
            "B (95% CI)",
            "B - A",
            "paired 95% CI",
            "verdict",
        ],
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


def render_comparison(a: Report, b: Report, *, seed: int = 1234, resamples: int = 1000) -> str:
    parts = [f"## Evals comparison: A `{a.run_id}` → B `{b.run_id}`", ""]
    quality = quality_table(a, b, seed=seed, resamples=resamples)
    tables = [t for t in (quality, perf_table(a, b)) if t is not None]
    if not tables:
        parts.append("No metrics in common.")
    parts += [table_md(t) for t in tables]
    return "\n".join(parts)
