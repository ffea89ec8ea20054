"""Evaluation metrics against hand-computed cases, scikit-learn, and each other."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from uq_guard import ConfigurationError, UndefinedMetricError
from uq_guard.evaluation import (
    METRICS,
    aurac,
    auroc,
    bootstrap_ci,
    brier_score,
    cross_fitted_isotonic,
    ece,
    evaluate,
    isotonic_brier,
    paired_difference_ci,
    prr,
    risk_coverage_curve,
    smooth_ece,
)
from uq_guard.evaluation.metrics import MIN_CLASS_ANSWERS, class_balance_warning

# four answers: two wrong (0.1, 0.4), two right (0.35, 0.8)
CONF = [0.1, 0.4, 0.35, 0.8]
RIGHT = [0, 0, 1, 1]


def noisy(n: int = 400, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    correct = rng.integers(0, 2, n).astype(float)
    conf = np.clip(0.25 * correct + 0.75 * rng.random(n), 0, 1)
    return (np.round(conf, 1) if ties else conf), correct


# -- AUROC ---------------------------------------------------------------------


def test_auroc_by_hand() -> None:
    # right 0.35 beats wrong 0.1 but not 0.4; right 0.8 beats both: 3 of 4 pairs
    assert auroc(CONF, RIGHT) == pytest.approx(0.75)


def test_auroc_counts_a_tie_as_half() -> None:
    # right 0.5 ties both wrong 0.5s (1/2 + 1/2), right 0.9 beats both: 3 of 4
    assert auroc([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1]) == pytest.approx(0.75)
    assert auroc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("conf", "expected"), [([0.1, 0.2, 0.8, 0.9], 1.0), ([0.9, 0.8, 0.2, 0.1], 0.0)]
)
def test_auroc_perfect_and_inverted(conf: list[float], expected: float) -> None:
    assert auroc(conf, [0, 0, 1, 1]) == expected


def test_auroc_equals_scikit_learn_with_ties() -> None:
    conf, correct = noisy()
    assert auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


@pytest.mark.parametrize("metric", [auroc, prr])
@pytest.mark.parametrize(("labels", "word"), [([1, 1, 1], "correct"), ([0, 0, 0], "wrong")])
def test_ranking_metrics_refuse_one_class(metric, labels: list[int], word: str) -> None:
    with pytest.raises(UndefinedMetricError, match=f"every one of the 3 answers is {word}"):
        metric([0.2, 0.5, 0.9], labels)


@pytest.mark.parametrize(
    ("conf", "correct", "message"),
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1], "same length"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, float("inf")], [1, 0], "infinite"),
        ([0.1, 0.2], [1, 2], "correct must"),
        ([[0.1, 0.2]], [[1, 0]], "one-dimensional"),
        (["high", "low"], [1, 0], "must be numbers"),
    ],
)
def test_bad_input_is_named_never_a_nan(conf, correct, message: str) -> None:
    for metric in (auroc, prr, aurac, ece, smooth_ece, isotonic_brier):
        with pytest.raises(ConfigurationError, match=message):
            metric(conf, correct)


# -- PRR ------------------------------------------------------------------------


def test_prr_by_hand() -> None:
    # ascending confidence: wrong, right, wrong, right. Losses kept after rejecting k:
    # 2,1,1,0,0 -> area (5 - 1) ... trapezoid: (sum - first/2)/n^2 = (4 - 1)/16 = 3/16
    # random: total/(2n) = 1/4; oracle keeps 2,1,0,0,0 -> (3 - 1)/16 = 1/8
    assert prr(CONF, RIGHT) == pytest.approx((1 / 4 - 3 / 16) / (1 / 4 - 1 / 8))


def test_prr_oracle_random_and_inverted() -> None:
    assert prr([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert prr([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(-1.0)
    assert prr([0.5, 0.5, 0.5, 0.5], [0, 1, 1, 0]) == pytest.approx(0.0)  # all tied = random


def test_prr_is_two_auroc_minus_one_for_binary_correctness() -> None:
    for seed in range(5):
        conf, correct = noisy(seed=seed)
        assert prr(conf, correct) == pytest.approx(2 * auroc(conf, correct) - 1, abs=1e-12)


def test_prr_takes_a_graded_quality() -> None:
    assert prr([0.2, 0.5, 0.9], [0.0, 0.5, 1.0]) == pytest.approx(1.0)
    assert prr([0.9, 0.5, 0.2], [0.0, 0.5, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(UndefinedMetricError):
        prr([0.2, 0.5, 0.9], [0.5, 0.5, 0.5])


def test_prr_does_not_depend_on_input_order() -> None:
    conf, correct = noisy(n=60)
    order = np.random.default_rng(1).permutation(60)
    assert prr(conf[order], correct[order]) == pytest.approx(prr(conf, correct), abs=1e-12)


# -- AURAC and the risk-coverage curve -------------------------------------------


def test_aurac_by_hand() -> None:
    # kept after rejecting 0..3 least confident: accuracy 2/4, 2/3, 1/2, 1/1
    assert aurac(CONF, RIGHT) == pytest.approx((1 / 2 + 2 / 3 + 1 / 2 + 1) / 4)


def test_aurac_ties_and_one_class() -> None:
    assert aurac([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # the tie is broken in expectation
    assert aurac([0.2, 0.9], [1, 1]) == 1.0
    assert aurac([0.2, 0.9], [0, 0]) == 0.0


def test_risk_coverage_curve_by_hand() -> None:
    curve = risk_coverage_curve([0.9, 0.9, 0.5, 0.2], [1, 0, 1, 0])

    np.testing.assert_allclose(curve.threshold, [0.9, 0.5, 0.2])
    np.testing.assert_array_equal(curve.n_answered, [2, 3, 4])
    np.testing.assert_array_equal(curve.n_errors, [1, 1, 2])
    np.testing.assert_allclose(curve.coverage, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.5, 1 / 3, 0.5])


# -- ECE, smooth ECE, Brier ------------------------------------------------------


def test_ece_by_hand() -> None:
    # two bins: {0.2, 0.4} mean .3 vs accuracy .5; {0.6, 0.8} mean .7 vs accuracy 1
    assert ece([0.2, 0.4, 0.6, 0.8], [0, 1, 1, 1], n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)


def test_ece_never_splits_a_tie_group() -> None:
    # 0.3 x4 (half right) stays in one bin, 0.9 x2 (all right) in another
    conf, correct = [0.3, 0.3, 0.3, 0.3, 0.9, 0.9], [1, 1, 0, 0, 1, 1]
    assert ece(conf, correct, n_bins=3) == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.1)
    assert ece(conf[::-1], correct[::-1], n_bins=3) == pytest.approx(ece(conf, correct, n_bins=3))


def test_ece_uses_fifteen_equal_mass_bins() -> None:
    conf, correct = noisy(n=150, ties=False)
    order = np.argsort(conf)
    bins = np.array_split(order, 15)  # 10 questions each
    expected = sum(len(b) / 150 * abs(conf[b].mean() - correct[b].mean()) for b in bins)
    assert ece(conf, correct) == pytest.approx(expected)


def test_calibration_errors_of_constant_predictions() -> None:
    # every answer right at confidence 0.8: off by exactly 0.2 everywhere
    assert ece(np.full(50, 0.8), np.ones(50)) == pytest.approx(0.2)
    assert smooth_ece(np.full(50, 0.8), np.ones(50)) == pytest.approx(0.2, abs=1e-6)
    assert smooth_ece(np.full(50, 0.8), np.ones(50), bandwidth=0.05) == pytest.approx(0.2, abs=1e-6)
    # half right at 0.5: perfectly calibrated
    half = np.tile([0.0, 1.0], 25)
    assert ece(np.full(50, 0.5), half) == pytest.approx(0.0)
    assert smooth_ece(np.full(50, 0.5), half) == pytest.approx(0.0, abs=1e-9)


def _smooth_ece_direct(conf: np.ndarray, correct: np.ndarray, sigma: float) -> float:
    """The definition, evaluated point by point on a fine grid with every reflection."""
    t = np.linspace(0, 1, 20001)[:, None]
    kernel = sum(
        np.exp(-0.5 * ((t - s) / sigma) ** 2)
        for k in range(-4, 5)
        for s in (conf + 2 * k, -conf + 2 * k)
    ) / (sigma * np.sqrt(2 * np.pi))
    smoothed = np.abs(kernel @ (correct - conf)) / conf.size
    return float(np.trapezoid(smoothed, t[:, 0]))


@pytest.mark.parametrize("sigma", [0.03, 0.1, 0.3])
def test_smooth_ece_matches_its_definition(sigma: float) -> None:
    conf, correct = noisy(n=200, seed=3, ties=False)
    assert smooth_ece(conf, correct, bandwidth=sigma) == pytest.approx(
        _smooth_ece_direct(conf, correct, sigma), abs=2e-4
    )


def test_smooth_ece_bandwidth_is_its_fixed_point_and_grows_with_miscalibration() -> None:
    rng = np.random.default_rng(0)
    f = rng.random(2000)
    calibrated = (rng.random(2000) < f).astype(float)
    overconfident = (rng.random(2000) < np.clip(f - 0.2, 0, 1)).astype(float)

    value = smooth_ece(f, overconfident)
    assert value == pytest.approx(smooth_ece(f, overconfident, bandwidth=value), abs=1e-6)
    assert smooth_ece(f, calibrated) < 0.05 < value
    assert value == pytest.approx(0.2, abs=0.03)


def test_calibration_metrics_need_probabilities() -> None:
    for metric in (ece, smooth_ece, brier_score):
        with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
            metric([-1.0, 2.0], [0, 1])


def test_brier_score_by_hand() -> None:
    assert brier_score([0.8, 0.3], [1, 0]) == pytest.approx((0.04 + 0.09) / 2)


def test_isotonic_brier_is_cross_fitted_not_in_sample() -> None:
    # a score that carries no information: in-sample isotonic overfits the noise
    rng = np.random.default_rng(0)
    conf, correct = rng.random(300), rng.integers(0, 2, 300).astype(float)
    in_sample = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(conf, correct)
    in_sample_brier = brier_score(in_sample.predict(conf), correct)

    cross_fitted = isotonic_brier(conf, correct, n_folds=5, seed=0)

    assert cross_fitted != pytest.approx(in_sample_brier, abs=1e-3)
    # in sample it "beats" the best constant p(1-p); out of sample it honestly does not
    base_rate = correct.mean()
    assert in_sample_brier < base_rate * (1 - base_rate) < cross_fitted


def test_cross_fitted_isotonic_is_seeded_and_handles_one_class() -> None:
    conf, correct = noisy()
    a = cross_fitted_isotonic(conf, correct, seed=1)
    np.testing.assert_array_equal(a, cross_fitted_isotonic(conf, correct, seed=1))
    assert ((a >= 0) & (a <= 1)).all()
    assert isotonic_brier([0.1, 0.5, 0.7, 0.8, 0.9], [1, 1, 1, 1, 1]) == 0.0
    # one wrong answer among many: plain folds, no warning, no NaN
    assert np.isfinite(isotonic_brier(conf, np.r_[0.0, np.ones(conf.size - 1)]))
    with pytest.raises(ConfigurationError, match="at least 5 questions"):
        isotonic_brier([0.1, 0.9], [0, 1])


# -- bootstrap and the summary ------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    conf, correct = noisy()
    a = bootstrap_ci(conf, correct, "auroc", n_resamples=300, seed=7)
    b = bootstrap_ci(conf, correct, "auroc", n_resamples=300, seed=7)
    c = bootstrap_ci(conf, correct, "auroc", n_resamples=300, seed=8)

    assert a == b and a != c
    assert a.low < a.estimate < a.high
    assert a.n_valid == a.n_resamples == 300
    narrow = bootstrap_ci(conf, correct, "auroc", n_resamples=300, seed=7, level=0.5)
    assert a.low < narrow.low < narrow.high < a.high


@pytest.mark.parametrize(
    ("name", "one"),
    [
        ("auroc", lambda c, y: roc_auc_score(y, c)),
        ("prr", prr),
        ("aurac", aurac),
        ("ece", ece),
    ],
)
def test_vectorised_bootstrap_equals_a_loop(name: str, one) -> None:
    conf, correct = noisy(n=80)
    interval = bootstrap_ci(conf, correct, name, n_resamples=200, seed=3)

    indices = np.random.default_rng(3).integers(0, 80, size=(200, 80))
    values = [one(conf[i], correct[i]) for i in indices if 0 < correct[i].sum() < 80]
    np.testing.assert_allclose([interval.low, interval.high], np.quantile(values, [0.025, 0.975]))


def test_bootstrap_drops_and_counts_undefined_resamples() -> None:
    interval = bootstrap_ci([0.1, 0.5, 0.9], [0, 1, 1], "auroc", n_resamples=200, seed=0)
    assert 0 < interval.n_valid < 200


def test_bootstrap_options_and_errors() -> None:
    conf, correct = noisy(n=50)
    zero = bootstrap_ci(conf, correct, "ece", n_resamples=0, n_bins=5)
    assert zero.low == zero.high == zero.estimate == ece(conf, correct, n_bins=5)
    for name in ("brier", "smooth_ece"):
        interval = bootstrap_ci(conf, correct, name, n_resamples=50)
        assert interval.low <= interval.estimate <= interval.high
    with pytest.raises(ConfigurationError, match="unknown metric"):
        bootstrap_ci(conf, correct, "f1")
    with pytest.raises(ConfigurationError, match="no option"):
        bootstrap_ci(conf, correct, "auroc", n_bins=3)
    with pytest.raises(ConfigurationError, match="level"):
        bootstrap_ci(conf, correct, "auroc", level=1.5)
    with pytest.raises(UndefinedMetricError):
        bootstrap_ci(conf, np.ones(50), "auroc")


def test_paired_difference_resamples_the_same_questions_for_both_scores() -> None:
    conf, correct = noisy(n=80)
    rng = np.random.default_rng(5)
    other = conf + rng.normal(0, 0.3, size=80)
    interval = paired_difference_ci(other, conf, correct, n_resamples=200, seed=3)

    assert interval.estimate == pytest.approx(
        roc_auc_score(correct, other) - roc_auc_score(correct, conf)
    )
    indices = np.random.default_rng(3).integers(0, 80, size=(200, 80))
    values = [
        roc_auc_score(correct[i], other[i]) - roc_auc_score(correct[i], conf[i])
        for i in indices
        if 0 < correct[i].sum() < 80
    ]
    np.testing.assert_allclose([interval.low, interval.high], np.quantile(values, [0.025, 0.975]))
    same = paired_difference_ci(conf, conf, correct, n_resamples=100)
    assert same.estimate == same.low == same.high == 0.0  # a score against itself: no spread
    with pytest.raises(ConfigurationError, match="unknown metric"):
        paired_difference_ci(conf, other, correct, "f1")
    with pytest.raises(UndefinedMetricError):
        paired_difference_ci(conf, other, np.ones(80))


def test_evaluate_tabulates_every_metric_and_says_what_is_undefined() -> None:
    conf, correct = noisy(n=100)
    summary = evaluate(conf, correct, n_resamples=50)
    assert set(summary.metrics) == set(METRICS)
    assert summary.n == 100 and summary.accuracy == pytest.approx(correct.mean())
    json.dumps(summary.as_dict())

    all_right = evaluate(conf, np.ones(100), n_resamples=20)
    assert set(all_right.undefined) == {"auroc", "prr"}
    assert "correct" in all_right.undefined["auroc"]
    assert all_right.metrics["aurac"].estimate == 1.0

    raw = evaluate(-3 * conf, correct, n_resamples=20)  # an uncertainty, negated: not a probability
    assert set(raw.undefined) == {"ece", "smooth_ece"}
    assert raw.metrics["auroc"].estimate == pytest.approx(1 - auroc(conf, correct))


# -- too few right or wrong answers ---------------------------------------------


def test_too_few_right_answers_carry_a_warning() -> None:
    warning = class_balance_warning(3, 74)
    assert warning is not None and warning.startswith("only 3 of 74 answers are right (4.1%)")
    assert f"fewer than {MIN_CLASS_ANSWERS} right answers" in warning
    assert class_balance_warning(71, 74).startswith("only 3 of 74 answers are wrong")
    assert class_balance_warning(1, 50).startswith("only 1 of 50 answers is right")
    assert class_balance_warning(0, 5).startswith("none of 5 answers is right")
    assert class_balance_warning(MIN_CLASS_ANSWERS - 1, 400) is not None
    assert class_balance_warning(MIN_CLASS_ANSWERS, 2 * MIN_CLASS_ANSWERS) is None
    assert class_balance_warning(0, 0) is None
    with pytest.raises(ConfigurationError, match="n_correct"):
        class_balance_warning(5, 4)


def test_evaluate_carries_the_class_balance_warning() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(74)
    correct = np.zeros(74)
    correct[:3] = 1
    summary = evaluate(conf, correct, n_resamples=20)
    assert len(summary.warnings) == 1 and "only 3 of 74" in summary.warnings[0]
    assert summary.as_dict()["warnings"] == summary.warnings
    conf, correct = noisy(n=200)
    assert evaluate(conf, correct, n_resamples=20).warnings == []


def test_abstention_shares_are_what_a_threshold_withholds_of_each_class() -> None:
    from uq_guard.evaluation.metrics import abstention_shares

    confidence = np.array([0.1, 0.2, 0.6, 0.05, 0.7, 0.9])
    correct = np.array([False, False, False, True, True, True])
    assert abstention_shares(confidence, correct, 0.5) == (
        pytest.approx(2 / 3),
        pytest.approx(1 / 3),
    )
    wrong, right = abstention_shares(confidence[:3], correct[:3], 0.5)
    assert wrong == pytest.approx(2 / 3) and np.isnan(right)  # no right answer to withhold
