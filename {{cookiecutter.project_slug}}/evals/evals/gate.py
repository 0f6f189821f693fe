"""The CI gate: per-suite thresholds, regression against a baseline report, and (with
`run --compare-to BASE`) the candidate model against its base.

Exit codes (also used by the CLI): 0 passed, 1 quality gate failed, 2 the run itself
failed (endpoint down, too many request errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from evals.results import GateCheck, GateResult, MetricDifference, Report, SuiteResult

EXIT_PASSED = 0
EXIT_GATE_FAILED = 1
EXIT_RUN_FAILED = 2


def parse_threshold_overrides(items: list[str]) -> dict[tuple[str | None, str], float]:
    """`suite.metric=value` or `metric=value` (every suite that has the metric)."""
    overrides: dict[tuple[str | None, str], float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"threshold {item!r}: expected [suite.]metric=value")
        suite, dot, metric = key.strip().rpartition(".")
        try:
            overrides[(suite if dot else None, metric)] = float(value)
        except ValueError:
            raise ValueError(f"threshold {item!r}: {value!r} is not a number") from None
    return overrides


def effective_thresholds(
    suite: SuiteResult, overrides: Mapping[tuple[str | None, str], float]
) -> dict[str, float]:
    thresholds = dict(suite.thresholds)
    for (suite_name, metric), value in overrides.items():
        if suite_name in (None, suite.name):
            thresholds[metric] = value
    return thresholds


def _gates(suite: SuiteResult, metric: str) -> tuple[bool, str | None]:
    result = suite.metrics.get(metric)
    if result is None or result.gating:
        return True, None
    return False, result.gating_note


def threshold_checks(
    suite: SuiteResult, overrides: Mapping[tuple[str | None, str], float]
) -> list[GateCheck]:
    checks = []
    for metric, limit in sorted(effective_thresholds(suite, overrides).items()):
        value = suite.metric_value(metric)
        enforced, note = _gates(suite, metric)
        if value is None:
            checks.append(
                GateCheck(
                    suite=suite.name,
                    metric=metric,
                    kind="threshold",
                    passed=False,
                    enforced=enforced,
                    limit=limit,
                    message=f"no value for {metric!r} (not computed by this suite)",
                )
            )
            continue
        passed = value >= limit
        message = f"{value:.3f} {'>=' if passed else '<'} {limit:.3f}"
        if not enforced:
            message += f" (not enforced: {note})"
        checks.append(
            GateCheck(
                suite=suite.name,
                metric=metric,
                kind="threshold",
                passed=passed,
                enforced=enforced,
                value=value,
                limit=limit,
                message=message,
            )
        )
    return checks


def regression_checks(
    suite: SuiteResult, baseline: SuiteResult, tolerance: float
) -> list[GateCheck]:
    """A metric regresses when even the top of its CI, plus the tolerance, is below the
    baseline's mean: the drop is larger than noise (CI) and slack (tolerance) together."""
    checks = []
    for name, metric in sorted(suite.metrics.items()):
        before = baseline.metrics.get(name)
        if metric.summary is None or before is None or before.summary is None:
            continue
        now, then = metric.summary, before.summary
        passed = now.ci_high + tolerance >= then.mean
        enforced, note = _gates(suite, name)
        message = (
            f"{then.mean:.3f} -> {now.mean:.3f} "
            f"(CI {now.ci_low:.3f}..{now.ci_high:.3f}, tolerance {tolerance:.3f})"
        )
        if not enforced:
            message += f" (not enforced: {note})"
        checks.append(
            GateCheck(
                suite=suite.name,
                metric=name,
                kind="regression",
                passed=passed,
                enforced=enforced,
                value=now.mean,
                limit=then.mean - tolerance,
                message=message,
            )
        )
    return checks


@dataclass
class ComparisonGate:
    """What the candidate must show against its base.

    `non_inferior`: on every metric, the lower end of the paired 95% CI of (candidate -
    base) is above -margin (a one-sided test at 2.5%). `better_on`: `suite` (each of its
    metrics) or `suite.metric` where that lower end must be above 0.
    """

    margin: float
    non_inferior: bool = True
    better_on: list[str] = field(default_factory=list)


def _difference_check(d: MetricDifference, kind: str, limit: float, passed_word: str) -> GateCheck:
    low = d.difference.ci_low
    passed = low > limit
    message = (
        f"candidate - base {d.difference.mean:+.3f}, 95% CI "
        f"[{low:+.3f}, {d.difference.ci_high:+.3f}] over {d.difference.n} pairs: "
        f"{passed_word if passed else 'not shown'} (CI low {'>' if passed else '<='} "
        f"{limit:+.3f})"
    )
    return GateCheck(
        suite=d.suite,
        metric=d.metric,
        kind=kind,  # type: ignore[arg-type]
        passed=passed,
        enforced=d.gating,
        value=d.difference.mean,
        limit=limit,
        message=message if d.gating else f"{message} (not enforced: judge not calibrated)",
    )


def _wanted(target: str, d: MetricDifference) -> bool:
    suite, _, metric = target.partition(".")
    return d.suite == suite and metric in ("", d.metric)


def comparison_checks(differences: list[MetricDifference], gate: ComparisonGate) -> list[GateCheck]:
    checks = []
    if gate.non_inferior:
        checks += [
            _difference_check(
                d, "non_inferiority", -gate.margin, f"no worse (margin {gate.margin})"
            )
            for d in differences
        ]
    for target in gate.better_on:
        matching = [d for d in differences if _wanted(target, d)]
        checks += [_difference_check(d, "superiority", 0.0, "better") for d in matching]
        if not matching:
            suite, _, metric = target.partition(".")
            checks.append(
                GateCheck(
                    suite=suite,
                    metric=metric or "*",
                    kind="superiority",
                    passed=False,
                    message=f"--better-on {target}: no such metric in the compared suites",
                )
            )
    return checks


def evaluate_gate(
    suites: list[SuiteResult],
    *,
    overrides: Mapping[tuple[str | None, str], float] | None = None,
    baseline: Report | None = None,
    baseline_name: str | None = None,
    tolerance: float = 0.02,
    differences: list[MetricDifference] | None = None,
    comparison_gate: ComparisonGate | None = None,
) -> GateResult:
    checks: list[GateCheck] = []
    before = {s.name: s for s in baseline.suites if s.status == "ok"} if baseline else {}
    for suite in suites:
        if suite.status != "ok":
            continue
        checks += threshold_checks(suite, overrides or {})
        if suite.name in before:
            checks += regression_checks(suite, before[suite.name], tolerance)
    if comparison_gate is not None:
        checks += comparison_checks(differences or [], comparison_gate)
    passed = all(c.passed for c in checks if c.enforced)
    return GateResult(passed=passed, checks=checks, baseline=baseline_name)
