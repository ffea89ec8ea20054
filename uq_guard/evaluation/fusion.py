"""Fitting a fused calibrator: a cross-fitted logistic regression over several scores.

No single score ranks right and wrong answers best on every data set: the
reply's log-probability (G-NLL) wins on one, the agreement of the samples on
another. A *fused* calibrator reads several of a report's scores at once and
returns P(correct)::

    from uq_guard.evaluation.fusion import evaluate_fused, fit_fused
    from uq_guard.evaluation.records import read_records

    records = read_records("runs/nq/records.jsonl")
    calibrator = fit_fused(records)                  # or fit_fused(score_dicts, correct)
    calibrator.save("calib.json")                    # GuardConfig(calibration="calib.json")

    result = evaluate_fused(records, n_resamples=1000)
    result.summary.metrics["auroc"]                  # held out, with a 95% interval
    result.single["gnll"].metrics["auroc"]           # each score alone, for comparison

How it is fitted (the applying side is :class:`uq_guard.calibration.FusedMapping`):

* **Features.** By default the scores of :data:`ANSWER_SCORES` present
  (finite) in at least 95% of the records and not constant;
  ``features=[...]`` chooses (``select_features(rows, answer_scores_only=False)``
  gives every score). Each is turned the confidence way
  (:func:`uq_guard.report.score_as_confidence`). The default keeps to scores
  that read the *answers* (the reply's token probabilities, the agreement
  and spread of the sampled answers): the scores that read the prompts'
  geometry (``prompt_semantic_volume``, and raw Inv-Entropy and its
  siblings, which with meaning-neutral perturbations mostly measure how far
  the frames moved the question's embedding) rank questions by their form,
  which a data set ties to its answers by accident (on the countries set a
  capital question is both easier and differently spread than a currency
  one): a fused model fitted on them learns that set, not the model.
  ``guard_confidence``, the label-free confidence, is never a default: it is
  a function of a score already in the list (Inv-Entropy's or Degree's),
  whose meaning depends on the path the call took; name it to include it.
* **Model.** Standardised features (training mean and standard deviation,
  clipped to ±5), scikit-learn's ``LogisticRegression`` with an L2 penalty
  and no class weights. ``C`` is chosen among ``C_GRID`` by the log loss of
  stratified K-fold out-of-fold predictions, or fixed with ``C=``. Rows
  missing a feature are left out of the model that reads it.
* **Recalibration.** With ``recalibration="auto"`` a Platt or isotonic map
  of the logit is kept only if, fitted on out-of-fold logits and applied
  cross-fitted, it lowers the smooth ECE by at least ``MIN_ECE_GAIN`` and
  (isotonic, which ties scores) costs at most ``MAX_AUROC_LOSS`` of AUROC.
* **Sub-models.** One more model for each group of :data:`FEATURE_GROUPS`
  (and each union of groups) the features touch, fitted without it, so a
  call without log-probabilities or without perturbations still gets a
  model fitted for its case.
* **Held-out metrics.** :func:`evaluate_fused` runs all of the above K
  times, each without one stratified fold, and scores the left-out fold
  with the result as the guard would (sub-models included). These
  out-of-fold probabilities give the AUROC, ECE and smooth ECE it prints and
  stores (``mapping.held_out``); the saved model is then fitted on all data.

Records whose confidence came from another scorer than most records
(Degree where no perturbed prompt was answered) have their perturbation
scores and ``guard_confidence`` read as missing, exactly as the guard reads
such a call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from uq_guard._exceptions import ConfigurationError, UndefinedMetricError
from uq_guard.calibration import Calibrator, HeldOutMetrics
from uq_guard.evaluation._arrays import import_sklearn
from uq_guard.evaluation.fusion_features import (
    ANSWER_SCORES,
    DEFAULT_MIN_PRESENCE,
    FusedData,
    fused_data,
    select_features,
)
from uq_guard.evaluation.fusion_models import (
    C_GRID,
    CLIP,
    MAX_AUROC_LOSS,
    MIN_ECE_GAIN,
    FitOptions,
    Recalibration,
    fit_mapping,
    usable_folds,
)
from uq_guard.evaluation.metrics import MetricSummary, auroc, ece, evaluate, smooth_ece

__all__ = [
    "ANSWER_SCORES",
    "CLIP",
    "C_GRID",
    "DEFAULT_MIN_PRESENCE",
    "MAX_AUROC_LOSS",
    "MIN_ECE_GAIN",
    "FusedData",
    "FusedEvaluation",
    "SubModelHeldOut",
    "evaluate_fused",
    "fit_fused",
    "fused_data",
    "select_features",
]

_T = TypeVar("_T")


def _one_blas_thread(function: Callable[..., _T]) -> Callable[..., _T]:
    """Run with one BLAS thread: a 15-column regression only loses by spreading out.

    Hundreds of small fits on a busy machine were ten times slower with the
    default thread pool than with one thread.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn depends on it
            return function(*args, **kwargs)
        with threadpool_limits(limits=1):
            return function(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class SubModelHeldOut:
    """One model of a fused calibrator used alone, cross-fitted (point estimates).

    Attributes:
        n / n_correct: the questions that have its features, and the right ones.
        auroc: None when they are all right or all wrong.
        smooth_ece: its smooth ECE on them.
    """

    n: int
    n_correct: int
    auroc: float | None
    smooth_ece: float


@dataclass
class FusedEvaluation:
    """A fused calibrator fitted on all the data, and how it did held out.

    Attributes:
        calibrator: fitted on every question; ``mapping.held_out`` holds the
            cross-fitted point estimates below.
        features: the features it reads.
        probability: each question's out-of-fold P(correct) (NaN where no
            model had any of its features).
        correct: 0/1 per question.
        summary: AUROC, ECE and smooth ECE of ``probability`` with bootstrap intervals.
        single: for each feature alone (as a confidence, over the questions
            that have it), its AUROC with an interval, for comparison.
        models: each model of the file (by its features) used alone, held
            out, on the questions that have its features: what a call gets
            when it lacks the others (e.g. no log-probabilities).
    """

    calibrator: Calibrator
    features: list[str]
    probability: np.ndarray
    correct: np.ndarray
    summary: MetricSummary
    single: dict[str, MetricSummary] = field(default_factory=dict)
    models: dict[tuple[str, ...], SubModelHeldOut] = field(default_factory=dict)

    @property
    def best_single(self) -> tuple[str, float] | None:
        """The single feature with the highest AUROC, and that AUROC (None if none is defined)."""
        defined = {
            name: s.metrics["auroc"].estimate
            for name, s in self.single.items()
            if "auroc" in s.metrics
        }
        if not defined:
            return None
        name = max(defined, key=lambda k: defined[k])
        return name, defined[name]


def _prepared(
    data: Any,
    correct: Any,
    *,
    features: Sequence[str] | None,
    method: str | None,
    min_presence: float,
    options: FitOptions,
) -> tuple[FusedData, int]:
    """The data to fit (options checked first), and the folds it allows (at least 2).

    Raises:
        ConfigurationError: bad options or data, fewer than 2 right or 2 wrong answers.
        MissingDependencyError: scikit-learn is not installed.
    """
    import_sklearn("fitting a fused calibrator")
    options.check()
    prepared = fused_data(
        data, correct, features=features, method=method, min_presence=min_presence
    )
    folds = usable_folds(prepared.correct, options.n_folds)
    if folds < 2:
        raise ConfigurationError(
            f"a fused calibrator needs at least 2 right and 2 wrong answers, got "
            f"{int(prepared.correct.sum())} right of {prepared.correct.size}"
        )
    return prepared, folds


@_one_blas_thread
def evaluate_fused(
    data: Any,
    correct: Any = None,
    *,
    features: Sequence[str] | None = None,
    method: str | None = None,
    C: float | None = None,
    n_folds: int = 5,
    seed: int = 0,
    recalibration: Recalibration = "auto",
    fallbacks: bool = True,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    clip: float = CLIP,
    n_resamples: int = 1000,
    level: float = 0.95,
) -> FusedEvaluation:
    """Fit a fused calibrator on all the data and measure it cross-fitted (module docstring).

    Args:
        data / correct / features / method / min_presence: see :func:`fused_data`.
        C: scikit-learn's inverse L2 strength; None = chosen among ``C_GRID``
            by out-of-fold log loss.
        n_folds: stratified folds, for the held-out metrics and inside each
            fit (capped at the size of the smaller class).
        seed: seeds the folds.
        recalibration: ``auto`` (keep a Platt or isotonic map of the logit
            only if it measurably helps), ``none``, ``platt`` or ``isotonic``.
        fallbacks: fit the sub-models for calls that lack a group of features.
        clip: standardised features are clipped to ``±clip``.
        n_resamples / level: the bootstrap intervals of the summary (0 = none).

    Raises:
        ConfigurationError: bad options or data, fewer than 2 right or 2 wrong answers.
        MissingDependencyError: scikit-learn is not installed.
    """
    options = FitOptions(C, n_folds, seed, recalibration, fallbacks, clip)
    prepared, folds = _prepared(
        data, correct, features=features, method=method, min_presence=min_presence, options=options
    )
    from sklearn.model_selection import StratifiedKFold

    labels = prepared.correct
    probability = np.full(labels.size, np.nan)
    by_model: dict[tuple[str, ...], np.ndarray] = {}
    column = {name: i for i, name in enumerate(prepared.features)}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(prepared.table, labels):
        mapping = fit_mapping(prepared, train, options)
        probability[test] = mapping.predict(prepared.table[test]).probability
        for model in mapping.models:
            values = prepared.table[np.ix_(test, [column[f] for f in model.features])]
            complete = np.isfinite(values).all(axis=1)
            alone = by_model.setdefault(tuple(model.features), np.full(labels.size, np.nan))
            alone[test[complete]] = model.probability(values[complete], clip)
    scored = np.isfinite(probability)
    held_prob, held_correct = probability[scored], labels[scored]
    try:
        held_auroc: float | None = auroc(held_prob, held_correct)
    except UndefinedMetricError:
        held_auroc = None
    held_out = HeldOutMetrics(
        n_folds=folds,
        seed=seed,
        n=int(scored.sum()),
        n_correct=int(held_correct.sum()),
        auroc=held_auroc,
        ece=ece(held_prob, held_correct),
        smooth_ece=smooth_ece(held_prob, held_correct),
    )
    mapping = fit_mapping(prepared, np.arange(labels.size), options)
    calibrator = Calibrator(
        method=prepared.method,
        mapping=mapping.model_copy(update={"held_out": held_out}),
        n_fitted=int(labels.size),
        n_correct=int(labels.sum()),
    )
    summary = evaluate(
        held_prob,
        held_correct,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        metrics=("auroc", "ece", "smooth_ece"),
    )
    single = {}
    for index, name in enumerate(prepared.features):
        column = prepared.table[:, index]
        present = np.isfinite(column)
        if present.any():
            single[name] = evaluate(
                column[present],
                labels[present],
                n_resamples=n_resamples,
                level=level,
                seed=seed,
                metrics=("auroc",),
            )
    return FusedEvaluation(
        calibrator=calibrator,
        features=prepared.features,
        probability=probability,
        correct=labels,
        summary=summary,
        single=single,
        models={key: _held_out_alone(p, labels) for key, p in by_model.items()},
    )


def _held_out_alone(probability: np.ndarray, correct: np.ndarray) -> SubModelHeldOut:
    held = np.isfinite(probability)
    prob, labels = probability[held], correct[held]
    try:
        value: float | None = auroc(prob, labels)
    except (UndefinedMetricError, ConfigurationError):
        value = None
    return SubModelHeldOut(
        n=int(held.sum()),
        n_correct=int(labels.sum()),
        auroc=value,
        smooth_ece=smooth_ece(prob, labels) if prob.size else float("nan"),
    )


@_one_blas_thread
def fit_fused(
    data: Any,
    correct: Any = None,
    *,
    features: Sequence[str] | None = None,
    method: str | None = None,
    C: float | None = None,
    n_folds: int = 5,
    seed: int = 0,
    recalibration: Recalibration = "auto",
    fallbacks: bool = True,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    clip: float = CLIP,
    cross_fit: bool = True,
) -> Calibrator:
    """A fused calibrator fitted on all the data (see :func:`evaluate_fused` for the options).

    With ``cross_fit`` (the default) the file also records the held-out
    AUROC, ECE and smooth ECE (``mapping.held_out``), which costs K more fits.

    Raises:
        ConfigurationError: bad options or data, fewer than 2 right or 2 wrong answers.
        MissingDependencyError: scikit-learn is not installed.
    """
    if cross_fit:
        return evaluate_fused(
            data,
            correct,
            features=features,
            method=method,
            C=C,
            n_folds=n_folds,
            seed=seed,
            recalibration=recalibration,
            fallbacks=fallbacks,
            min_presence=min_presence,
            clip=clip,
            n_resamples=0,
        ).calibrator
    options = FitOptions(C, n_folds, seed, recalibration, fallbacks, clip)
    prepared, _ = _prepared(
        data, correct, features=features, method=method, min_presence=min_presence, options=options
    )
    mapping = fit_mapping(prepared, np.arange(prepared.correct.size), options)
    return Calibrator(
        method=prepared.method,
        mapping=mapping,
        n_fitted=int(prepared.correct.size),
        n_correct=int(prepared.correct.sum()),
    )
