"""Each metric on one data set: two equal-length arrays in, a number out.

``confidence`` is higher for a more trusted answer (pass ``-uncertainty``
for an uncertainty score) and ``correct`` is 1/True for a right answer. The
conventions (ties, undefined metrics, bad input) are those of
:mod:`uq_guard.evaluation.metrics`, which also gives each a bootstrap
interval (:func:`~uq_guard.evaluation.metrics.bootstrap_ci`) and every metric
in one call (:func:`~uq_guard.evaluation.metrics.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError, UndefinedMetricError
from uq_guard.evaluation._arrays import as_pair, import_sklearn
from uq_guard.evaluation._metric_rows import (
    aurac_rows,
    auroc_rows,
    ece_rows,
    grid_residuals,
    prr_rows,
    smooth_ece_bandwidth,
    smooth_ece_rows,
)

__all__ = [
    "ECE_BINS",
    "SMOOTH_ECE_GRID",
    "RiskCoverageCurve",
    "abstention_shares",
    "aurac",
    "auroc",
    "brier_score",
    "cross_fitted_isotonic",
    "ece",
    "isotonic_brier",
    "prr",
    "risk_coverage_curve",
    "smooth_ece",
]

ECE_BINS = 15
SMOOTH_ECE_GRID = 1001


def _defined(value: float, metric: str, correct: np.ndarray) -> float:
    if np.isnan(value):
        n_right = int(correct.sum())
        which = "correct" if n_right == correct.size else "wrong" if n_right == 0 else "alike"
        raise UndefinedMetricError(
            f"{metric} is undefined: every one of the {correct.size} answers is {which}, "
            "so there is nothing to rank; evaluate on data with both right and wrong answers"
        )
    return float(value)


def auroc(confidence: Any, correct: Any) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers.

    The probability that a random right answer has a higher confidence than a
    random wrong one, ties counting one half (Mann–Whitney). 1 = perfect, 0.5
    = no better than chance, 0 = perfectly inverted. Equal to scikit-learn's
    ``roc_auc_score(correct, confidence)``; computed from ranks so that the
    bootstrap can do all resamples in one pass.

    Raises:
        UndefinedMetricError: every answer is correct, or every answer is wrong.
        ConfigurationError: bad input (see the module docstring).
    """
    conf, corr = as_pair(confidence, correct)
    return _defined(auroc_rows(conf[None], corr[None])[0], "AUROC", corr)


def prr(confidence: Any, correct: Any) -> float:
    """Prediction rejection ratio (Malinin & Gales), the share of the oracle's gain achieved.

    Reject answers from the least confident up, handing each rejected one to
    an oracle (its loss becomes 0), and follow the total loss of the whole
    set as the rejected fraction goes from 0 to 1: the *rejection curve*.
    ``PRR = (A_random - A_score) / (A_random - A_oracle)``, where ``A`` is the
    area under the rejection curve of random rejection, of the score and of
    the oracle (which rejects the wrong answers first). 1 = oracle, 0 =
    random, -1 = perfectly inverted. For 0/1 correctness this equals
    ``2 * AUROC - 1``; it differs from AUROC once ``correct`` is graded.

    This is *not* the AUPRC ratio the Inv-Entropy authors' code reports
    under that name (ALGORITHMS.md §5).

    Args:
        confidence: higher = more trusted.
        correct: 0/1 labels, or a graded quality in [0, 1] (loss = 1 - quality).

    Raises:
        UndefinedMetricError: all losses are equal (e.g. every answer correct),
            so the oracle gains nothing over random.
        ConfigurationError: bad input.
    """
    conf, quality = as_pair(confidence, correct, graded=True)
    return _defined(prr_rows(conf[None], quality[None])[0], "PRR", quality)


def aurac(confidence: Any, correct: Any) -> float:
    """Area under the rejection–accuracy curve.

    The accuracy among the answers kept after rejecting the ``k`` least
    confident, averaged over ``k = 0 .. n-1`` (rejection fractions 0 to
    (n-1)/n, each of width 1/n). Higher is better; ``1 - aurac`` is the area
    under the risk–coverage curve. Defined on one class too: 1.0 when every
    answer is correct, 0.0 when every answer is wrong.

    Raises:
        ConfigurationError: bad input.
    """
    conf, corr = as_pair(confidence, correct)
    return float(aurac_rows(conf[None], corr[None])[0])


def ece(confidence: Any, correct: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-mass bins (default 15).

    Questions are sorted by confidence and cut into bins of equal count
    (sizes differ by at most one); a group of equal confidences is never
    split, it joins the bin of its first member, so a bin can be larger and
    a later one empty (empty bins are skipped). ``ECE = sum_b (n_b / n) *
    |mean confidence_b - accuracy_b|``. Defined on one class (all-correct
    data give ``1 - mean confidence``); with fewer questions than bins each
    question is its own bin.

    Raises:
        ConfigurationError: bad input, confidence outside [0, 1], ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ConfigurationError(f"n_bins must be at least 1, got {n_bins}")
    conf, corr = as_pair(confidence, correct, unit=True)
    return float(ece_rows(conf[None], corr[None], n_bins)[0])


def smooth_ece(
    confidence: Any,
    correct: Any,
    *,
    bandwidth: float | None = None,
    grid: int = SMOOTH_ECE_GRID,
) -> float:
    """Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE"), the kernel-smoothed calibration error.

    The residuals ``correct - confidence`` are smoothed with a Gaussian kernel
    of width ``sigma`` reflected at 0 and 1 (so no mass leaks out of the unit
    interval), and ``smECE_sigma = integral over t in [0, 1] of
    |(1/n) sum_i K_sigma(t, f_i) (y_i - f_i)|``: the smoothed residual weighted
    by the smoothed density of predictions. The default bandwidth is the
    authors' hyperparameter-free choice, the fixed point ``smECE_sigma =
    sigma`` (found by bisection; floored at two grid steps, where a perfectly
    calibrated sample then scores about 0). The integral is a trapezoid rule
    on ``grid`` evenly spaced points, the data spread onto it by linear
    binning (as the authors' ``relplot`` does). Unlike binned ECE it is
    continuous in the predictions. Defined on one class.

    Args:
        confidence: probabilities in [0, 1].
        correct: 0/1 labels.
        bandwidth: a fixed ``sigma`` instead of the fixed point.
        grid: integration points on [0, 1].

    Raises:
        ConfigurationError: bad input, confidence outside [0, 1], bad bandwidth or grid.
    """
    if grid < 11:
        raise ConfigurationError(f"grid must be at least 11 points, got {grid}")
    if bandwidth is not None and not (0.0 < bandwidth <= 10.0):
        raise ConfigurationError(f"bandwidth must be in (0, 10], got {bandwidth}")
    conf, corr = as_pair(confidence, correct, unit=True)
    mass = grid_residuals(conf[None], corr[None], grid)
    if bandwidth is not None:
        return float(smooth_ece_rows(mass, conf.size, bandwidth)[0])
    return smooth_ece_bandwidth(mass, conf.size)[1]


def brier_score(probability: Any, correct: Any) -> float:
    """Mean squared difference between a probability of being right and the 0/1 outcome.

    Raises:
        ConfigurationError: bad input or probabilities outside [0, 1].
    """
    prob, corr = as_pair(probability, correct, unit=True)
    return float(np.mean((prob - corr) ** 2))


def cross_fitted_isotonic(
    confidence: Any, correct: Any, *, n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold P(correct) from an isotonic map: each question's value comes from a
    map fitted on the other folds, never on itself (ALGORITHMS.md §7.6).

    Folds are stratified by correctness when each class has at least
    ``n_folds`` members, plain shuffled folds otherwise; both are seeded. A
    fold whose training part holds one class predicts that class's rate
    (0 or 1) — isotonic regression's own answer, not an error.

    Needs scikit-learn (the ``eval`` extra).

    Raises:
        ConfigurationError: bad input, or fewer questions than folds (or ``n_folds < 2``).
        MissingDependencyError: scikit-learn is not installed.
    """
    import_sklearn("the cross-fitted isotonic Brier score")
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold, StratifiedKFold

    conf, corr = as_pair(confidence, correct)
    if n_folds < 2:
        raise ConfigurationError(f"n_folds must be at least 2, got {n_folds}")
    if conf.size < n_folds:
        raise ConfigurationError(
            f"{n_folds}-fold cross-fitting needs at least {n_folds} questions, got {conf.size}"
        )
    n_right = int(corr.sum())
    if min(n_right, conf.size - n_right) >= n_folds:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(conf, corr)
    else:
        splits = KFold(n_folds, shuffle=True, random_state=seed).split(conf)
    out = np.empty_like(conf)
    for train, test in splits:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(conf[train], corr[train])
        out[test] = iso.predict(conf[test])
    return out


def isotonic_brier(confidence: Any, correct: Any, *, n_folds: int = 5, seed: int = 0) -> float:
    """Brier score of the cross-fitted isotonic map of ``confidence`` (see
    :func:`cross_fitted_isotonic`): how good the score is as a probability once
    monotonically recalibrated, measured out of sample. Any real score works
    (it need not lie in [0, 1]). Defined on one class (0.0: the map predicts it).

    Raises:
        ConfigurationError: bad input or too few questions for the folds.
        MissingDependencyError: scikit-learn is not installed.
    """
    prob = cross_fitted_isotonic(confidence, correct, n_folds=n_folds, seed=seed)
    return brier_score(prob, correct)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Error rate among answered questions for every threshold one can set.

    Entry ``i`` answers the questions with ``confidence >= threshold[i]``
    (the policies act on ``confidence < threshold``). Thresholds are the
    distinct confidences, highest first, so coverage grows along the arrays.

    Attributes:
        threshold: distinct confidence values, descending.
        coverage: share of questions answered.
        risk: share of the answered that are wrong.
        n_answered / n_errors: the counts behind them.
    """

    threshold: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray
    n_answered: np.ndarray
    n_errors: np.ndarray


def risk_coverage_curve(confidence: Any, correct: Any) -> RiskCoverageCurve:
    """The risk–coverage curve at every distinct confidence (see :class:`RiskCoverageCurve`).

    Raises:
        ConfigurationError: bad input.
    """
    conf, corr = as_pair(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    desc, wrong = conf[order], 1.0 - corr[order]
    last_of_group = np.append(desc[1:] != desc[:-1], True)
    n_answered = np.flatnonzero(last_of_group) + 1
    n_errors = np.cumsum(wrong)[last_of_group]
    return RiskCoverageCurve(
        threshold=desc[last_of_group],
        coverage=n_answered / conf.size,
        risk=n_errors / n_answered,
        n_answered=n_answered,
        n_errors=n_errors.round().astype(int),
    )


def abstention_shares(
    confidence: np.ndarray, correct: np.ndarray, threshold: float
) -> tuple[float, float]:
    """``(wrong, right)``: the shares of wrong and of right answers under ``threshold``.

    What an ``abstain`` policy at that threshold withholds of each; NaN for a
    class with no answer.
    """
    below = np.asarray(confidence, dtype=float) < threshold
    right = np.asarray(correct, dtype=bool)
    wrong_share = float(below[~right].mean()) if (~right).any() else float("nan")
    right_share = float(below[right].mean()) if right.any() else float("nan")
    return wrong_share, right_share
