"""Statistics for eval scores: mean, standard error, seeded bootstrap CI, per-category
breakdowns, paired differences between two models, classification metrics, and
judge-human agreement (Cohen's kappa)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

NO_PREDICTION = "<none>"


class Summary(BaseModel):
    n: int
    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    @property
    def ci_halfwidth(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the standard error of the mean (sample standard deviation, ddof=1)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("no values")
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), stderr


def bootstrap_ci(
    values: Sequence[float], *, seed: int, resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; the same seed gives the same interval."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2 or np.all(arr == arr[0]):
        m = float(arr.mean())
        return m, m
    result = scipy_stats.bootstrap(
        (arr,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(values: Sequence[float], *, seed: int, resamples: int = 1000) -> Summary:
    mean, stderr = mean_stderr(values)
    low, high = bootstrap_ci(values, seed=seed, resamples=resamples)
    return Summary(n=len(values), mean=mean, stderr=stderr, ci_low=low, ci_high=high)


def paired_difference(
    candidate: Sequence[float], base: Sequence[float], *, seed: int, resamples: int = 1000
) -> Summary:
    """The mean of per-item differences (candidate - base) with its standard error and a
    paired bootstrap CI: items are resampled together, so what both models find hard
    cancels out and the interval is much tighter than two independent ones."""
    if len(candidate) != len(base):
        raise ValueError("paired values need the same items on both sides")
    diffs = np.asarray(candidate, dtype=float) - np.asarray(base, dtype=float)
    return summarise(diffs.tolist(), seed=seed, resamples=resamples)


def by_category(
    values: Sequence[float], categories: Sequence[str], *, seed: int, resamples: int = 1000
) -> dict[str, Summary]:
    groups: dict[str, list[float]] = defaultdict(list)
    for value, category in zip(values, categories, strict=True):
        groups[category].append(value)
    return {
        name: summarise(group, seed=seed, resamples=resamples)
        for name, group in sorted(groups.items())
    }


class AveragedPRF(BaseModel):
    precision: float
    recall: float
    f1: float


class ClassificationReport(BaseModel):
    labels: list[str]
    accuracy: float
    micro: AveragedPRF
    macro: AveragedPRF
    weighted: AveragedPRF
    per_class: dict[str, dict[str, float]]
    #: rows are true labels (`labels`), columns predicted (`labels` + `<none>` = no class
    #: named in the output)
    confusion_matrix: list[list[int]]
    confusion_columns: list[str]


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]
) -> ClassificationReport:
    """Precision/recall/F1 over `labels`. An output naming no class counts as a miss for
    its true class (recall) and as nobody's false positive."""
    labels = list(labels)
    pred = [p if p is not None else NO_PREDICTION for p in y_pred]
    averaged: dict[str, AveragedPRF] = {}
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, pred, labels=labels, average=average, zero_division=0
        )
        averaged[average] = AveragedPRF(precision=float(p), recall=float(r), f1=float(f))
    p, r, f, support = precision_recall_fscore_support(
        y_true, pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    columns = [*labels, NO_PREDICTION]
    matrix = confusion_matrix(y_true, pred, labels=columns)[: len(labels)]
    accuracy = float(np.mean([t == q for t, q in zip(y_true, pred, strict=True)]))
    return ClassificationReport(
        labels=labels,
        accuracy=accuracy,
        micro=averaged["micro"],
        macro=averaged["macro"],
        weighted=averaged["weighted"],
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
        confusion_columns=columns,
    )


def cohen_kappa(rater_a: Sequence[Any], rater_b: Sequence[Any]) -> float:
    """Agreement beyond chance; 1 = perfect, 0 = chance. Undefined (NaN) when both raters
    give one single label throughout; reported as 0 (no evidence of agreement)."""
    a, b = [str(x) for x in rater_a], [str(x) for x in rater_b]
    labels = sorted(set(a) | set(b))
    if len(labels) < 2:
        return 0.0
    kappa = float(cohen_kappa_score(a, b, labels=labels))
    return 0.0 if math.isnan(kappa) else kappa
