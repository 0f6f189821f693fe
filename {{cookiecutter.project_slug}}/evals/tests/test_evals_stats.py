"""Statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from evals.stats import (
    bootstrap_ci,
    by_category,
    classification_report,
    cohen_kappa,
    mean_stderr,
    paired_difference,
    summarise,
)


def test_mean_and_standard_error_hand_computed():
    # values 1,0,1,1: mean 0.75; sample sd = sqrt(((0.25^2)*3 + 0.75^2) / 3) = 0.5
    mean, stderr = mean_stderr([1, 0, 1, 1])
    assert mean == pytest.approx(0.75)
    assert stderr == pytest.approx(0.5 / math.sqrt(4))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1]
    first = bootstrap_ci(values, seed=7)
    assert first == bootstrap_ci(values, seed=7)
    assert first != bootstrap_ci(values, seed=8)
    low, high = first
    assert 0 <= low < sum(values) / len(values) < high <= 1


def test_constant_scores_have_a_zero_width_interval():
    summary = summarise([1.0, 1.0, 1.0], seed=1)
    assert (summary.mean, summary.stderr, summary.ci_low, summary.ci_high) == (1, 0, 1, 1)


def test_per_category_breakdown():
    groups = by_category([1, 0, 1, 1], ["a", "a", "b", "b"], seed=1)
    assert groups["a"].mean == 0.5 and groups["a"].n == 2
    assert groups["b"].mean == 1.0


def test_micro_and_macro_f1_differ_hand_computed():
    # true:  a a a a b b c c          pred: a a a b b a - c    ("-" = no class named)
    # a: tp 3, fp 1 (s6), fn 1 (s4) -> P 3/4 R 3/4 F1 3/4
    # b: tp 1, fp 1 (s4), fn 1 (s6) -> P 1/2 R 1/2 F1 1/2
    # c: tp 1, fp 0, fn 1 (no class) -> P 1 R 1/2 F1 2/3
    # macro F1 = (3/4 + 1/2 + 2/3) / 3 = 23/36
    # micro: tp 5, fp 2, fn 3 -> P 5/7, R 5/8, F1 = 2PR/(P+R) = 2/3
    # weighted F1 = (4*3/4 + 2*1/2 + 2*2/3) / 8 = 2/3 (here equal to micro by chance)
    y_true = ["a", "a", "a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "a", "a", "b", "b", "a", None, "c"]
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report.macro.f1 == pytest.approx(23 / 36)
    assert report.micro.precision == pytest.approx(5 / 7)
    assert report.micro.recall == pytest.approx(5 / 8)
    assert report.micro.f1 == pytest.approx(2 / 3)
    assert report.weighted.f1 == pytest.approx(2 / 3)
    assert report.macro.f1 != pytest.approx(report.micro.f1)
    assert report.accuracy == pytest.approx(5 / 8)
    assert report.per_class["c"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    # rows true a,b,c; columns a,b,c,<none>
    assert report.confusion_matrix == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]
    assert report.confusion_columns == ["a", "b", "c", "<none>"]


def test_cohen_kappa_hand_computed():
    # 10 items; agreement on 7 (p_o = 0.7). Rater A: 5 pass / 5 fail, rater B: 6 / 4.
    # p_e = 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = ["P", "P", "P", "P", "P", "F", "F", "F", "F", "F"]
    b = ["P", "P", "P", "P", "F", "P", "P", "F", "F", "F"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


def test_cohen_kappa_of_a_judge_that_always_says_the_same_is_zero():
    assert cohen_kappa(["P", "F", "P"], ["P", "P", "P"]) == pytest.approx(0.0)
    assert cohen_kappa(["P", "P"], ["P", "P"]) == 0.0  # undefined: no evidence


def test_paired_difference_hand_computed():
    # per-item differences 1, 0, 0, 1: mean 0.5, sample sd sqrt(1/3)
    d = paired_difference([1, 1, 0, 1], [0, 1, 0, 0], seed=1)
    assert d.n == 4
    assert d.mean == pytest.approx(0.5)
    assert d.stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert d.ci_low <= 0.5 <= d.ci_high
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1, 0], [1], seed=1)


def test_pairing_sees_a_consistent_gain_that_independent_intervals_hide():
    # items of very different difficulty; the candidate is 0.1 better on every one
    base = [0.05 * i for i in range(20)]
    candidate = [v + 0.1 for v in base]
    a, b = summarise(base, seed=3), summarise(candidate, seed=3)
    assert a.ci_high > b.ci_low  # the two intervals overlap: "within noise" unpaired
    d = paired_difference(candidate, base, seed=3)
    assert d.ci_low == pytest.approx(0.1) and d.ci_high == pytest.approx(0.1)
