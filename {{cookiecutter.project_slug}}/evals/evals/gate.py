"""The CI gate: per-suite thresholds and regression against a baseline report.

Exit codes (also used by the CLI): 0 passed, 1 quality gate failed, 2 the run itself
failed (endpoint down, too many request errors).
"""

from __future__ import annotations

from collections.abc import Mapping

from evals.results import GateCheck, GateResult, Report, SuiteResult

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


def evaluate_gate(
    suites: list[SuiteResult],
    *,
    overrides: Mapping[tuple[str | None, str], float] | None = None,
    baseline: Report | None = None,
    baseline_name: str | None = None,
    tolerance: float = 0.02,
) -> GateResult:
    checks: list[GateCheck] = []
    before = {s.name: s for s in baseline.suites if s.status == "ok"} if baseline else {}
    for suite in suites:
        if suite.status != "ok":
            continue
        checks += threshold_checks(suite, overrides or {})
        if suite.name in before:
            checks += regression_checks(suite, before[suite.name], tolerance)
    passed = all(c.passed for c in checks if c.enforced)
    return GateResult(passed=passed, checks=checks, baseline=baseline_name)
