"""Fitting the models of a fused calibrator: logistic regressions, their C and recalibration.

How (see :mod:`uq_guard.evaluation.fusion` for the whole story): standardised
features clipped to ``±clip``, scikit-learn's L2 ``LogisticRegression`` with
``C`` chosen among :data:`C_GRID` by out-of-fold log loss, an optional Platt
or isotonic map of the logit kept only when it helps (:data:`MIN_ECE_GAIN`,
:data:`MAX_AUROC_LOSS`), and one sub-model for each group of features a call
may lack.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import expit, log_expit

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import (
    FEATURE_GROUPS,
    FusedMapping,
    IsotonicMapping,
    LogisticModel,
    PlattMapping,
)
from uq_guard.evaluation.calibrators import fit_isotonic, fit_platt
from uq_guard.evaluation.fusion_features import FusedData
from uq_guard.evaluation.metrics import auroc, smooth_ece

__all__ = [
    "CLIP",
    "C_GRID",
    "MAX_AUROC_LOSS",
    "MIN_ECE_GAIN",
    "FitOptions",
    "Recalibration",
    "fit_mapping",
    "usable_folds",
]

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MIN_ECE_GAIN = 0.01
MAX_AUROC_LOSS = 0.005
CLIP = 5.0

Recalibration = Literal["auto", "none", "platt", "isotonic"]


@dataclass(frozen=True)
class FitOptions:
    """How each model of a fused calibrator is fitted (see ``evaluate_fused``'s arguments)."""

    C: float | None
    n_folds: int
    seed: int
    recalibration: Recalibration
    fallbacks: bool
    clip: float

    def check(self) -> None:
        """Raise ConfigurationError, naming the option, for a bad one."""
        if self.n_folds < 2:
            raise ConfigurationError(f"n_folds must be at least 2, got {self.n_folds}")
        if self.C is not None and not (np.isfinite(self.C) and self.C > 0):
            raise ConfigurationError(f"C must be a positive number, got {self.C}")
        if self.recalibration not in ("auto", "none", "platt", "isotonic"):
            raise ConfigurationError(
                f"unknown recalibration {self.recalibration!r}; choose auto, none, platt or "
                "isotonic"
            )
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be a positive number, got {self.clip}")


def _feature_sets(features: list[str], fallbacks: bool) -> list[list[str]]:
    """The full feature list, then the list without each group (and union of groups) it touches."""
    sets = [features]
    if not fallbacks:
        return sets
    groups = [g for g in FEATURE_GROUPS.values() if g & set(features)]
    for size in range(1, len(groups) + 1):
        for combo in itertools.combinations(groups, size):
            dropped = frozenset().union(*combo)
            rest = [f for f in features if f not in dropped]
            if rest and rest not in sets:
                sets.append(rest)
    return sets


def _log_loss(logit: np.ndarray, correct: np.ndarray) -> float:
    return float(-(correct * log_expit(logit) + (1 - correct) * log_expit(-logit)).mean())


def usable_folds(correct: np.ndarray, n_folds: int) -> int:
    """Folds for stratified K-fold: at most the size of the smaller class."""
    n_right = int(correct.sum())
    return min(n_folds, n_right, correct.size - n_right)


def _map_of(kind: str, logit: np.ndarray, correct: np.ndarray) -> PlattMapping | IsotonicMapping:
    from sklearn.exceptions import ConvergenceWarning

    fitter = fit_platt if kind == "platt" else fit_isotonic
    with warnings.catch_warnings():  # an unpenalised Platt fit on well-separated logits
        warnings.simplefilter("ignore", ConvergenceWarning)
        mapping = fitter(logit, correct, score="logit").mapping
    assert isinstance(mapping, PlattMapping | IsotonicMapping)
    return mapping


def _choose_recalibration(
    logit: np.ndarray,
    correct: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    option: Recalibration,
) -> PlattMapping | IsotonicMapping | None:
    """The map of the (out-of-fold) logit to keep, fitted on all of it; None = ``expit``."""
    if option == "none":
        return None
    if option != "auto":
        return _map_of(option, logit, correct)
    base = expit(logit)
    base_ece, base_auroc = smooth_ece(base, correct), auroc(base, correct)
    best: tuple[float, str] | None = None
    for kind in ("platt", "isotonic"):
        mapped = np.empty_like(logit)
        for train, test in splits:
            mapped[test] = _map_of(kind, logit[train], correct[train]).apply(logit[test])
        mapped = np.clip(mapped, 0.0, 1.0)
        error = smooth_ece(mapped, correct)
        if error > base_ece - MIN_ECE_GAIN or auroc(mapped, correct) < base_auroc - MAX_AUROC_LOSS:
            continue
        if best is None or error < best[0]:
            best = (error, kind)
    return None if best is None else _map_of(best[1], logit, correct)


def _fit_model(
    table: np.ndarray,
    correct: np.ndarray,
    columns: list[int],
    features: list[str],
    options: FitOptions,
) -> LogisticModel | None:
    """One logistic model on the rows that have all its features; None without enough data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    complete = np.isfinite(table[:, columns]).all(axis=1)
    values, labels = table[np.ix_(complete, columns)], correct[complete]
    folds = usable_folds(labels, options.n_folds)
    if folds < 2:
        return None
    means = values.mean(axis=0)
    scales = values.std(axis=0)
    scales[scales <= 1e-12] = 1.0  # constant here: z = 0, the coefficient does not matter
    z = np.clip((values - means) / scales, -options.clip, options.clip)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=options.seed).split(z, labels))

    def regression(c: float) -> Any:
        # Newton steps suit few features and many rows; exact to the same L2 optimum as lbfgs
        return LogisticRegression(C=c, solver="newton-cholesky", max_iter=100)

    out_of_fold: dict[float, np.ndarray] = {}
    for c in C_GRID if options.C is None else (options.C,):
        logit = np.empty(labels.size)
        for train, test in splits:
            logit[test] = regression(c).fit(z[train], labels[train]).decision_function(z[test])
        out_of_fold[c] = logit
    chosen = min(out_of_fold, key=lambda c: _log_loss(out_of_fold[c], labels))
    final = regression(chosen).fit(z, labels)
    return LogisticModel(
        features=features,
        means=[float(v) for v in means],
        scales=[float(v) for v in scales],
        coefficients=[float(v) for v in final.coef_[0]],
        intercept=float(final.intercept_[0]),
        C=chosen,
        recalibration=_choose_recalibration(
            out_of_fold[chosen], labels, splits, options.recalibration
        ),
        n_fitted=int(labels.size),
        n_correct=int(labels.sum()),
    )


def fit_mapping(data: FusedData, rows: np.ndarray, options: FitOptions) -> FusedMapping:
    """The fused mapping fitted on ``rows`` of ``data``: the full model, then its sub-models.

    Raises:
        ConfigurationError: the full model lacks 2 right and 2 wrong complete rows.
    """
    table, correct = data.table[rows], data.correct[rows]
    column = {name: i for i, name in enumerate(data.features)}
    models = []
    for subset in _feature_sets(data.features, options.fallbacks):
        model = _fit_model(table, correct, [column[f] for f in subset], subset, options)
        if model is None and not models:
            n_complete = int(np.isfinite(table).all(axis=1).sum())
            raise ConfigurationError(
                f"a fused calibrator needs at least 2 right and 2 wrong answers among the "
                f"{n_complete} questions that have every feature ({', '.join(data.features)}); "
                f"got {int(correct[np.isfinite(table).all(axis=1)].sum())} right"
            )
        if model is not None:
            models.append(model)
    return FusedMapping(models=models, clip=options.clip)
