"""The report data model (what `report.json` holds)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from evals.perf.metrics import PerfReport
from evals.stats import ClassificationReport, Summary


class MetricResult(BaseModel):
    name: str
    scorer: str
    summary: Summary | None = None
    unscored: int = 0
    per_category: dict[str, Summary] = Field(default_factory=dict)
    gating: bool = True
    gating_note: str | None = None


class JudgeAgreement(BaseModel):
    metric: str
    n: int
    kappa: float
    min_kappa: float
    no_verdict: int
    gates: bool


class SampleRecord(BaseModel):
    id: str
    category: str
    output: str | None = None
    error: str | None = None
    cached: bool = False
    retries: int = 0
    usage: dict[str, int] = Field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    scores: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def metric_value(self, metric: str) -> float | None:
        """The value this sample adds to a metric: 0 for a failed request (a gate must
        not pass on answers it never saw), None when the scorer could not judge it."""
        return 0.0 if self.error else self.scores.get(metric)


class SuiteResult(BaseModel):
    name: str
    description: str = ""
    dataset: str
    status: Literal["ok", "skipped", "failed"] = "ok"
    reason: str | None = None
    n_samples: int = 0
    n_errors: int = 0
    error_rate: float = 0.0
    duration_s: float = 0.0
    usage: dict[str, int] = Field(default_factory=dict)
    #: how structured output was asked for (response_format sent or refused), if at all
    structured_output: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, MetricResult] = Field(default_factory=dict)
    classification: ClassificationReport | None = None
    judge: list[JudgeAgreement] = Field(default_factory=list)
    samples: list[SampleRecord] = Field(default_factory=list)

    def metric_value(self, name: str) -> float | None:
        """A metric's point value: scorer metrics, or classification `accuracy`,
        `micro_f1`, `macro_f1`, `weighted_f1`."""
        if name in self.metrics:
            summary = self.metrics[name].summary
            return summary.mean if summary else None
        if self.classification is not None:
            report = self.classification
            named = {
                "accuracy": report.accuracy,
                "micro_f1": report.micro.f1,
                "macro_f1": report.macro.f1,
                "weighted_f1": report.weighted.f1,
            }
            return named.get(name)
        return None


class MetricDifference(BaseModel):
    """Candidate minus base on one metric, over the items both runs scored."""

    suite: str
    metric: str
    base: float
    candidate: float
    #: mean, stderr and paired bootstrap CI of the per-item differences
    difference: Summary
    #: items scored in only one of the two runs (left out of the pairs)
    unpaired: int = 0
    gating: bool = True

    @computed_field  # type: ignore[prop-decorator]
    @property
    def verdict(self) -> str:
        """better / worse: the paired CI excludes 0; within noise: it does not."""
        if self.difference.ci_low > 0:
            return "better"
        if self.difference.ci_high < 0:
            return "worse"
        return "within noise"


class Comparison(BaseModel):
    """`run --compare-to BASE`: the base model's results beside the candidate's."""

    base_model: str
    base_suites: list[SuiteResult] = Field(default_factory=list)
    differences: list[MetricDifference] = Field(default_factory=list)


class GateCheck(BaseModel):
    suite: str
    metric: str
    kind: Literal["threshold", "regression", "non_inferiority", "superiority"]
    passed: bool
    enforced: bool = True
    value: float | None = None
    limit: float | None = None
    message: str


class GateResult(BaseModel):
    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    baseline: str | None = None

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if c.enforced and not c.passed]


class Report(BaseModel):
    run_id: str
    created_at: str
    kind: Literal["quality", "perf"]
    endpoint: str
    model: str
    settings: dict[str, Any] = Field(default_factory=dict)
    suites: list[SuiteResult] = Field(default_factory=list)
    perf: PerfReport | None = None
    comparison: Comparison | None = None
    gate: GateResult | None = None
    errors: list[str] = Field(default_factory=list)
    exit_code: int = 0
    duration_s: float = 0.0
