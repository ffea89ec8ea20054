"""Evaluate uncertainty scores against labelled answers: metrics, TSU, correctness.

Everything here is a pure function of arrays, easy to call from a runner::

    from uq_guard.evaluation import assess_answer, evaluate, tsu

    correct = [assess_answer(reply, gold).correct for reply, gold in zip(replies, golds)]
    summary = evaluate(confidence, correct, n_resamples=1000, seed=0)
    summary.metrics["auroc"].estimate, summary.metrics["auroc"].low

Calibrators and risk-controlled thresholds are applied by
:mod:`uq_guard.calibration` and fitted in :mod:`uq_guard.evaluation.calibrators`
(Platt, isotonic, the threshold) and :mod:`uq_guard.evaluation.fusion` (a
logistic regression over several scores).
The metrics that fit an isotonic map need scikit-learn (``pip install
'uq-guard[eval]'``).
"""

from uq_guard.evaluation.correctness import Correctness, Judge, assess_answer, normalize_answer
from uq_guard.evaluation.metrics import (
    METRICS,
    Interval,
    MetricSummary,
    RiskCoverageCurve,
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
from uq_guard.evaluation.tsu import TSUResult, tsu

__all__ = [
    "METRICS",
    "Correctness",
    "Interval",
    "Judge",
    "MetricSummary",
    "RiskCoverageCurve",
    "TSUResult",
    "assess_answer",
    "aurac",
    "auroc",
    "bootstrap_ci",
    "brier_score",
    "cross_fitted_isotonic",
    "ece",
    "evaluate",
    "isotonic_brier",
    "normalize_answer",
    "paired_difference_ci",
    "prr",
    "risk_coverage_curve",
    "smooth_ece",
    "tsu",
]
