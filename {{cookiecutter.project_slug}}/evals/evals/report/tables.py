"""Report tables shared by the Markdown and HTML writers."""

from __future__ import annotations

from dataclasses import dataclass

from evals.perf.metrics import Distribution, PerfReport
from evals.results import Comparison, GateResult, MetricDifference, SuiteResult


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(dist: Distribution | None, field: str) -> str:
    return "-" if dist is None else f"{getattr(dist, field):.0f}"


def suite_table(suite: SuiteResult) -> Table:
    rows = []
    for metric in suite.metrics.values():
        s = metric.summary
        threshold = suite.thresholds.get(metric.name)
        rows.append(
            [
                metric.name,
                _f(s.mean if s else None),
                _f(s.stderr if s else None),
                f"{s.ci_low:.3f}-{s.ci_high:.3f}" if s else "-",
                str(s.n if s else 0)
                + (f" (+{metric.unscored} unscored)" if metric.unscored else ""),
                _f(threshold) if threshold is not None else "",
                "" if metric.gating else "no (see judge)",
            ]
        )
    if suite.classification is not None:
        c = suite.classification
        for name, value in (
            ("accuracy", c.accuracy),
            ("micro_f1", c.micro.f1),
            ("macro_f1", c.macro.f1),
            ("weighted_f1", c.weighted.f1),
        ):
            threshold = suite.thresholds.get(name)
            rows.append(
                [
                    name,
                    _f(value),
                    "",
                    "",
                    str(sum(map(sum, c.confusion_matrix))),
                    _f(threshold) if threshold is not None else "",
                    "",
                ]
            )
    return Table(
        title=f"{suite.name} ({suite.n_samples} samples, {suite.n_errors} errors)",
        headers=["metric", "mean", "stderr", "95% CI", "n", "threshold", "gates"],
        rows=rows,
    )


def signed_ci(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def difference_table(
    differences: list[MetricDifference], title: str, base: str, candidate: str
) -> Table:
    rows = [
        [
            d.suite,
            d.metric,
            f"{d.base:.3f}",
            f"{d.candidate:.3f}",
            f"{d.difference.mean:+.3f}",
            signed_ci(d.difference.ci_low, d.difference.ci_high),
            str(d.difference.n) + (f" ({d.unpaired} unpaired)" if d.unpaired else ""),
            d.verdict,
        ]
        for d in differences
    ]
    return Table(
        title=title,
        headers=[
            "suite",
            "metric",
            base,
            candidate,
            f"{candidate} - {base}",
            "95% CI (paired)",
            "pairs",
            "verdict",
        ],
        rows=rows,
    )


def comparison_table(candidate: str, comparison: Comparison) -> Table:
    return difference_table(
        comparison.differences,
        f"Candidate `{candidate}` against base `{comparison.base_model}` "
        "(paired by item: mean difference, paired bootstrap 95% CI)",
        "base",
        "candidate",
    )


def category_table(suite: SuiteResult) -> Table | None:
    categories = sorted({c for m in suite.metrics.values() for c in m.per_category})
    if len(categories) < 2:
        return None
    names = list(suite.metrics)
    rows = []
    for category in categories:
        row = [category]
        for name in names:
            s = suite.metrics[name].per_category.get(category)
            row.append(f"{s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}] n={s.n}" if s else "-")
        rows.append(row)
    return Table(title=f"{suite.name} by category", headers=["category", *names], rows=rows)


def classification_table(suite: SuiteResult) -> Table | None:
    c = suite.classification
    if c is None:
        return None
    rows = [
        [label, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]), str(int(v["support"]))]
        for label, v in c.per_class.items()
    ]
    for name, avg in (("micro", c.micro), ("macro", c.macro), ("weighted", c.weighted)):
        rows.append([f"**{name}**", _f(avg.precision), _f(avg.recall), _f(avg.f1), ""])
    return Table(
        title=f"{suite.name}: per-class precision/recall/F1",
        headers=["class", "precision", "recall", "F1", "support"],
        rows=rows,
    )


def judge_table(suite: SuiteResult) -> Table | None:
    if not suite.judge:
        return None
    rows = [
        [
            j.metric,
            str(j.n),
            f"{j.kappa:.2f}",
            f"{j.min_kappa:.2f}",
            str(j.no_verdict),
            "yes" if j.gates else "no",
        ]
        for j in suite.judge
    ]
    return Table(
        title=f"{suite.name}: judge agreement with human labels",
        headers=["judge metric", "labels", "Cohen's kappa", "required", "no verdict", "gates"],
        rows=rows,
    )


def gate_table(gate: GateResult) -> Table:
    rows = [
        [
            "pass" if c.passed else ("FAIL" if c.enforced else "fail (not enforced)"),
            c.suite,
            c.metric,
            c.kind,
            c.message,
        ]
        for c in gate.checks
    ]
    return Table(title="Gate", headers=["result", "suite", "metric", "check", "detail"], rows=rows)


def perf_table(perf: PerfReport) -> Table:
    rows = []
    for s in perf.scenarios:
        rows.append(
            [
                s.name,
                f"{s.completed}/{s.num_requests}",
                f"{s.request_throughput:.2f}",
                f"{s.output_throughput:.1f}",
                f"{s.goodput:.2f} ({s.good_fraction:.0%})",
                f"{_ms(s.ttft_ms, 'p50')} / {_ms(s.ttft_ms, 'p90')} / {_ms(s.ttft_ms, 'p99')}",
                f"{_ms(s.tpot_ms, 'p50')} / {_ms(s.tpot_ms, 'p90')} / {_ms(s.tpot_ms, 'p99')}",
                f"{_ms(s.itl_ms, 'p50')} / {_ms(s.itl_ms, 'p90')} / {_ms(s.itl_ms, 'p99')}",
                f"{_ms(s.e2e_ms, 'p50')} / {_ms(s.e2e_ms, 'p90')} / {_ms(s.e2e_ms, 'p99')}",
                f"{s.error_rate:.0%}",
            ]
        )
    return Table(
        title=(
            f"Performance (SLO profile {perf.slo_profile}: TTFT ≤ {perf.slo.ttft_ms:.0f} ms, "
            f"TPOT ≤ {perf.slo.tpot_ms:.0f} ms; max_tokens {perf.max_tokens}, "
            f"cache {'bypassed' if perf.cache_bypass else 'measured'})"
        ),
        headers=[
            "scenario",
            "ok",
            "req/s",
            "out tok/s",
            "goodput req/s",
            "TTFT ms p50/p90/p99",
            "TPOT ms p50/p90/p99",
            "ITL ms p50/p90/p99",
            "E2E ms p50/p90/p99",
            "errors",
        ],
        rows=rows,
    )
