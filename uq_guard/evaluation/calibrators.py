"""Fitting the calibrators of :mod:`uq_guard.calibration` on labelled data.

Platt and isotonic maps from ``(confidence, correct)`` pairs, and the
risk-controlled abstention threshold (ALGORITHMS.md §6). These need
scikit-learn (the ``eval`` extra) and the metrics of this package; the
calibrators they return are *applied* by :mod:`uq_guard.calibration`, which
needs neither. The fused calibrator (a logistic regression over several
scores) is fitted in :mod:`uq_guard.evaluation.fusion`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy.stats import beta

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import Calibrator, IsotonicMapping, PlattMapping, RiskControl
from uq_guard.evaluation._arrays import as_pair, import_sklearn
from uq_guard.evaluation.metrics import risk_coverage_curve

__all__ = ["fit_calibrator", "fit_isotonic", "fit_platt", "risk_controlled_threshold"]


def fit_platt(
    confidence: Any, correct: Any, *, method: str | None = None, score: str | None = None
) -> Calibrator:
    """Platt scaling: a logistic curve in the confidence, fitted by maximum likelihood.

    Uses Platt's (1999) smoothed targets, ``(N+ + 1) / (N+ + 2)`` for right
    and ``1 / (N- + 2)`` for wrong answers, instead of 1 and 0, so the fit
    stays finite when the score separates the classes perfectly and is
    defined on one class (then a constant near that class's rate). No other
    regularisation. A negative slope means the score is anti-informative;
    it is kept, since it is the fitted P(correct). ``method`` and ``score``:
    see :class:`Calibrator`.

    Raises:
        ConfigurationError: bad input, or confidences outside [0, 1] without ``score``.
        MissingDependencyError: scikit-learn is not installed.
    """
    import_sklearn("fitting a Platt calibrator")
    from sklearn.linear_model import LogisticRegression

    conf, corr = as_pair(confidence, correct, unit=score is None)
    n_right = corr.sum()
    target = np.where(corr == 1.0, (n_right + 1) / (n_right + 2), 1 / (conf.size - n_right + 2))
    # a soft target t is a row labelled 1 with weight t plus a row labelled 0 with weight 1 - t
    features = np.concatenate([conf, conf])[:, None]
    labels = np.concatenate([np.ones_like(conf), np.zeros_like(conf)])
    weights = np.concatenate([target, 1.0 - target])
    model = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10)
    model.fit(features, labels, sample_weight=weights)
    mapping = PlattMapping(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))
    return Calibrator(
        method=method, score=score, mapping=mapping, n_fitted=conf.size, n_correct=int(n_right)
    )


def fit_isotonic(
    confidence: Any, correct: Any, *, method: str | None = None, score: str | None = None
) -> Calibrator:
    """Isotonic calibration: the non-decreasing map that best fits the 0/1 outcomes (PAVA).

    Between knots it interpolates linearly and outside them it stays flat,
    exactly as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``
    predicts. On one class it is the constant 0 or 1. ``method`` and
    ``score``: see :class:`Calibrator`.

    Raises:
        ConfigurationError: bad input, or confidences outside [0, 1] without ``score``.
        MissingDependencyError: scikit-learn is not installed.
    """
    import_sklearn("fitting an isotonic calibrator")
    from sklearn.isotonic import IsotonicRegression

    conf, corr = as_pair(confidence, correct, unit=score is None)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(conf, corr)
    mapping = IsotonicMapping(
        x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_]
    )
    return Calibrator(
        method=method, score=score, mapping=mapping, n_fitted=conf.size, n_correct=int(corr.sum())
    )


def fit_calibrator(
    confidence: Any,
    correct: Any,
    kind: Literal["platt", "isotonic"] = "isotonic",
    *,
    method: str | None = None,
    score: str | None = None,
) -> Calibrator:
    """Fit a ``"platt"`` or ``"isotonic"`` calibrator (see :func:`fit_platt`, :func:`fit_isotonic`).

    Raises:
        ConfigurationError: unknown ``kind`` or bad input.
    """
    if kind == "platt":
        return fit_platt(confidence, correct, method=method, score=score)
    if kind == "isotonic":
        return fit_isotonic(confidence, correct, method=method, score=score)
    raise ConfigurationError(f"unknown calibrator kind {kind!r}; choose 'platt' or 'isotonic'")


# ---------------------------------------------------------------------------
# Risk control
# ---------------------------------------------------------------------------


def risk_controlled_threshold(
    confidence: Any, correct: Any, *, alpha: float, delta: float = 0.1
) -> RiskControl:
    """The most permissive abstention threshold whose answered error rate is bounded by ``alpha``.

    For each candidate threshold ``t`` (the distinct confidences, answering
    ``confidence >= t``), the Clopper–Pearson upper bound at level ``delta``
    on the error rate among the answered is computed (ALGORITHMS.md §6). The
    candidates are tested from the strictest to the most permissive, starting
    at the first that answers enough questions to pass at all
    (``n >= log(delta) / log(1 - alpha)``), and the scan stops at the first
    one whose bound exceeds ``alpha``; the last one that passed is returned.

    Why stop at the first failure rather than take the most permissive
    threshold that passes anywhere: that is fixed-sequence testing (as in
    Learn-then-Test, Angelopoulos et al. 2021), which keeps the promise
    *P(true answered error rate > alpha) <= delta* with no correction for the
    many thresholds tried. Picking the best of all thresholds is not valid:
    with an uninformative score whose error rate is just above alpha, some
    threshold passes by chance far more often than ``delta`` (about 30% of
    the time instead of 10% in our tests). When the bound crosses alpha once,
    the typical case, both rules give the same threshold.

    Compute it on the scale the guard will act on: on the calibrated
    confidence (``calibrator.apply(confidence)``) when the guard loads a
    calibration file, on held-out data or at least data the calibrator's
    ordering does not depend on (a monotone calibrator keeps the order).

    Args:
        confidence: higher = more trusted.
        correct: 0/1 labels.
        alpha: target error rate among answered questions, in (0, 1).
        delta: allowed failure probability, in (0, 1).

    Returns:
        the threshold and the coverage it buys, or ``feasible=False`` with the
        reason when no threshold qualifies.

    Raises:
        ConfigurationError: bad input or ``alpha``/``delta`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigurationError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta}")
    conf, corr = as_pair(confidence, correct)
    curve = risk_coverage_curve(conf, corr)
    wrong, kept = curve.n_errors, curve.n_answered
    bounds = np.where(  # clopper_pearson_upper, for every candidate at once
        wrong >= kept,
        1.0,
        beta.ppf(1.0 - delta, wrong + 1, np.maximum(kept - wrong, 1)),
    )
    needed = math.ceil(math.log(delta) / math.log(1.0 - alpha))
    start = int(np.searchsorted(curve.n_answered, needed))
    common = {"alpha": alpha, "delta": delta, "n": conf.size}

    if start >= len(bounds) or bounds[start] > alpha:
        if start >= len(bounds):
            why = (
                f"even with no errors, {needed} answered questions are needed to bound the error "
                f"rate by {alpha:g} at delta={delta:g}, and there are only {conf.size}"
            )
        else:
            why = (
                f"the strictest usable threshold ({curve.threshold[start]:.4g}, answering "
                f"{curve.n_answered[start]}) has {curve.n_errors[start]} errors, error bound "
                f"{bounds[start]:.3f} > alpha={alpha:g}"
            )
        return RiskControl(
            **common,
            feasible=False,
            threshold=None,
            coverage=0.0,
            n_answered=0,
            n_errors=0,
            error_rate=0.0,
            error_upper_bound=1.0,
            reason=f"no threshold qualifies: {why}; abstain on everything, or relax alpha/delta",
        )
    fails = np.flatnonzero(bounds[start:] > alpha)
    last = start + (int(fails[0]) - 1 if fails.size else len(bounds) - start - 1)
    answered, errors = int(curve.n_answered[last]), int(curve.n_errors[last])
    return RiskControl(
        **common,
        feasible=True,
        threshold=float(curve.threshold[last]),
        coverage=answered / conf.size,
        n_answered=answered,
        n_errors=errors,
        error_rate=errors / answered,
        error_upper_bound=float(bounds[last]),
        reason=(
            f"answering confidence >= {curve.threshold[last]:.4g} covers {answered}/{conf.size} "
            f"questions with {errors} errors; error rate <= {alpha:g} with probability >= "
            f"{1 - delta:g}"
        ),
    )
