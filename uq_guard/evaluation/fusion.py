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
import itertools
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
from scipy.special import expit, log_expit

from uq_guard._exceptions import ConfigurationError, UndefinedMetricError
from uq_guard.calibration import (
    FEATURE_GROUPS,
    GUARD_CONFIDENCE,
    Calibrator,
    FusedMapping,
    HeldOutMetrics,
    IsotonicMapping,
    LogisticModel,
    PlattMapping,
    feature_values,
)
from uq_guard.evaluation._arrays import as_correct, import_sklearn
from uq_guard.evaluation.calibrators import fit_isotonic, fit_platt
from uq_guard.evaluation.metrics import MetricSummary, auroc, ece, evaluate, smooth_ece
from uq_guard.evaluation.records import label_free_confidence

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

DEFAULT_MIN_PRESENCE = 0.95
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MIN_ECE_GAIN = 0.01
MAX_AUROC_LOSS = 0.005
CLIP = 5.0

Recalibration = Literal["auto", "none", "platt", "isotonic"]
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


@dataclass
class FusedData:
    """Labelled rows of feature values, ready to fit.

    Attributes:
        features: the column names.
        table: ``(questions, features)`` values as confidences; NaN = missing.
        correct: 0/1 per question.
        method: the scorer behind most records' confidence (None for plain dicts).
    """

    features: list[str]
    table: np.ndarray
    correct: np.ndarray
    method: str | None = None


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


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _rows_of(
    data: Any, correct: Any, method: str | None
) -> tuple[list[Mapping[str, Any]], list[float | None], list[str | None], np.ndarray]:
    """Score dicts, confidences, methods and labels from records or ``(score dicts, correct)``."""
    if correct is None and isinstance(data, tuple) and len(data) == 2:
        first = data[0]
        if isinstance(first, Sequence) and all(isinstance(item, Mapping) for item in first):
            data, correct = first, data[1]
    items = list(data)
    if correct is not None:
        if not all(isinstance(item, Mapping) for item in items):
            raise ConfigurationError(
                "with correct=..., data must be score dicts (one per question)"
            )
        labels = as_correct(correct)
        if labels.size != len(items):
            raise ConfigurationError(
                f"score dicts and correct must have the same length, got {len(items)} and "
                f"{labels.size}"
            )
        confidences = [item.get(GUARD_CONFIDENCE) for item in items]
        return items, confidences, [method] * len(items), labels
    records = [r for r in items if getattr(r, "error", None) is None]
    if not records or not all(hasattr(r, "scores") and hasattr(r, "correct") for r in records):
        raise ConfigurationError(
            "data must be eval records (with scores, confidence and correct) holding at least "
            "one answered question, or score dicts with correct=..."
        )
    labels = as_correct([bool(r.correct) for r in records])
    return (
        [r.scores for r in records],
        [label_free_confidence(r) for r in records],
        [getattr(r, "method", None) for r in records],
        labels,
    )


#: The default features of a fused calibrator: scores that read the answers (module docstring).
ANSWER_SCORES = frozenset(
    {
        "gnll",
        "mean_token_entropy",
        "entropy_area_score",
        "reply_agreement",
        "reply_agreement_perturbed",
        "semantic_volume",
        "semantic_entropy",
        "verbalized_confidence",
    }
)


def select_features(
    rows: Sequence[Mapping[str, float | None]],
    min_presence: float = DEFAULT_MIN_PRESENCE,
    *,
    answer_scores_only: bool = True,
) -> list[str]:
    """The default features: scores finite in at least ``min_presence`` of rows, not constant.

    In first-seen order; only :data:`ANSWER_SCORES` unless ``answer_scores_only``
    is False (and then every score but ``guard_confidence``; see the module
    docstring); when none of :data:`ANSWER_SCORES` qualifies, every score.
    """
    if not 0.0 < min_presence <= 1.0:
        raise ConfigurationError(f"min_presence must be in (0, 1], got {min_presence}")
    if answer_scores_only:
        chosen = select_features(rows, min_presence, answer_scores_only=False)
        return [name for name in chosen if name in ANSWER_SCORES] or chosen
    names = [n for n in dict.fromkeys(k for row in rows for k in row) if n != GUARD_CONFIDENCE]
    chosen = []
    for name in names:
        values = np.array([_finite_or_nan(row.get(name)) for row in rows])
        finite = values[np.isfinite(values)]
        if finite.size >= min_presence * len(rows) and np.ptp(finite) > 1e-12:
            chosen.append(name)
    return chosen


def _finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if np.isfinite(number) else float("nan")


def fused_data(
    data: Any,
    correct: Any = None,
    *,
    features: Sequence[str] | None = None,
    method: str | None = None,
    min_presence: float = DEFAULT_MIN_PRESENCE,
) -> FusedData:
    """Feature rows and labels from eval records, or from score dicts with ``correct``.

    Args:
        data: :class:`~uq_guard.evaluation.records.EvalRecord` s (failed ones
            are skipped), or score dicts (a ``guard_confidence`` key gives
            the label-free confidence), or a ``(score dicts, correct)`` tuple.
        correct: 0/1 per score dict.
        features: the features (default: :func:`select_features`).
        method: with score dicts, the scorer behind their confidence.
        min_presence: for the default features.

    Raises:
        ConfigurationError: no data, unknown features, or no feature qualifies.
    """
    rows, confidences, methods, labels = _rows_of(data, correct, method)
    if not rows:
        raise ConfigurationError("no questions to fit a fused calibrator on")
    majority = Counter(m for m in methods if m is not None).most_common(1)
    main_method = majority[0][0] if majority else None
    if features is None:
        with_confidence = [
            {**row, GUARD_CONFIDENCE: conf} for row, conf in zip(rows, confidences, strict=True)
        ]
        chosen = select_features(with_confidence, min_presence)
        if not chosen:
            raise ConfigurationError(
                f"no score is present in {min_presence:.0%} of the questions and varies; "
                "name the features to fuse"
            )
    else:
        chosen = list(dict.fromkeys(features))
        if not chosen:
            raise ConfigurationError("features is empty: name at least one score to fuse")
        known = {k for row in rows for k in row} | {GUARD_CONFIDENCE}
        unknown = [f for f in chosen if f not in known]
        if unknown:
            raise ConfigurationError(
                f"no score {', '.join(map(repr, unknown))} in the data; known: {sorted(known)}"
            )
    table = np.stack(
        [
            feature_values(
                row,
                chosen,
                confidence=conf,
                missing=FEATURE_GROUPS["perturbations"]
                if main_method is not None and m is not None and m != main_method
                else frozenset(),
            )
            for row, conf, m in zip(rows, confidences, methods, strict=True)
        ]
    )
    return FusedData(features=chosen, table=table, correct=labels, method=main_method)


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------


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


def _n_folds(correct: np.ndarray, n_folds: int) -> int:
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
    *,
    C: float | None,
    n_folds: int,
    seed: int,
    recalibration: Recalibration,
    clip: float,
) -> LogisticModel | None:
    """One logistic model on the rows that have all its features; None without enough data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    complete = np.isfinite(table[:, columns]).all(axis=1)
    values, labels = table[np.ix_(complete, columns)], correct[complete]
    folds = _n_folds(labels, n_folds)
    if folds < 2:
        return None
    means = values.mean(axis=0)
    scales = values.std(axis=0)
    scales[scales <= 1e-12] = 1.0  # constant here: z = 0, the coefficient does not matter
    z = np.clip((values - means) / scales, -clip, clip)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(z, labels))

    def regression(c: float) -> Any:
        # Newton steps suit few features and many rows; exact to the same L2 optimum as lbfgs
        return LogisticRegression(C=c, solver="newton-cholesky", max_iter=100)

    out_of_fold: dict[float, np.ndarray] = {}
    for c in C_GRID if C is None else (C,):
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
        recalibration=_choose_recalibration(out_of_fold[chosen], labels, splits, recalibration),
        n_fitted=int(labels.size),
        n_correct=int(labels.sum()),
    )


def _fit_mapping(
    data: FusedData, rows: np.ndarray, *, fallbacks: bool, clip: float, **options: Any
) -> FusedMapping:
    table, correct = data.table[rows], data.correct[rows]
    column = {name: i for i, name in enumerate(data.features)}
    models = []
    for subset in _feature_sets(data.features, fallbacks):
        model = _fit_model(
            table, correct, [column[f] for f in subset], subset, clip=clip, **options
        )
        if model is None and not models:
            n_complete = int(np.isfinite(table).all(axis=1).sum())
            raise ConfigurationError(
                f"a fused calibrator needs at least 2 right and 2 wrong answers among the "
                f"{n_complete} questions that have every feature ({', '.join(data.features)}); "
                f"got {int(correct[np.isfinite(table).all(axis=1)].sum())} right"
            )
        if model is not None:
            models.append(model)
    return FusedMapping(models=models, clip=clip)


def _check_options(n_folds: int, C: float | None, recalibration: str, clip: float) -> None:
    if n_folds < 2:
        raise ConfigurationError(f"n_folds must be at least 2, got {n_folds}")
    if C is not None and not (np.isfinite(C) and C > 0):
        raise ConfigurationError(f"C must be a positive number, got {C}")
    if recalibration not in ("auto", "none", "platt", "isotonic"):
        raise ConfigurationError(
            f"unknown recalibration {recalibration!r}; choose auto, none, platt or isotonic"
        )
    if not (np.isfinite(clip) and clip > 0):
        raise ConfigurationError(f"clip must be a positive number, got {clip}")


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
    import_sklearn("fitting a fused calibrator")
    from sklearn.model_selection import StratifiedKFold

    _check_options(n_folds, C, recalibration, clip)
    prepared = fused_data(
        data, correct, features=features, method=method, min_presence=min_presence
    )
    labels = prepared.correct
    folds = _n_folds(labels, n_folds)
    if folds < 2:
        raise ConfigurationError(
            f"a fused calibrator needs at least 2 right and 2 wrong answers, got "
            f"{int(labels.sum())} right of {labels.size}"
        )
    options = {
        "C": C,
        "n_folds": n_folds,
        "seed": seed,
        "recalibration": recalibration,
        "fallbacks": fallbacks,
        "clip": clip,
    }
    probability = np.full(labels.size, np.nan)
    by_model: dict[tuple[str, ...], np.ndarray] = {}
    column = {name: i for i, name in enumerate(prepared.features)}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(prepared.table, labels):
        mapping = _fit_mapping(prepared, train, **options)
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
    mapping = _fit_mapping(prepared, np.arange(labels.size), **options)
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
    options: dict[str, Any] = {
        "features": features,
        "method": method,
        "C": C,
        "n_folds": n_folds,
        "seed": seed,
        "recalibration": recalibration,
        "fallbacks": fallbacks,
        "min_presence": min_presence,
        "clip": clip,
    }
    if cross_fit:
        return evaluate_fused(data, correct, n_resamples=0, **options).calibrator
    import_sklearn("fitting a fused calibrator")
    _check_options(n_folds, C, recalibration, clip)
    prepared = fused_data(
        data, correct, features=features, method=method, min_presence=min_presence
    )
    if _n_folds(prepared.correct, n_folds) < 2:
        raise ConfigurationError(
            f"a fused calibrator needs at least 2 right and 2 wrong answers, got "
            f"{int(prepared.correct.sum())} right of {prepared.correct.size}"
        )
    mapping = _fit_mapping(
        prepared,
        np.arange(prepared.correct.size),
        C=C,
        n_folds=n_folds,
        seed=seed,
        recalibration=recalibration,
        fallbacks=fallbacks,
        clip=clip,
    )
    return Calibrator(
        method=prepared.method,
        mapping=mapping,
        n_fitted=int(prepared.correct.size),
        n_correct=int(prepared.correct.sum()),
    )
