"""Calibrators (confidence -> P(correct)) and risk-controlled abstention thresholds.

ALGORITHMS.md §6. Fit on labelled ``(confidence, correct)`` pairs from an
evaluation run, save to JSON, and load it in :class:`~uq_guard.GuardConfig`
(``calibration="calib.json"``): every report's ``confidence`` then is the
fitted P(correct) and ``calibrated`` is true::

    from uq_guard.evaluation.calibrators import fit_isotonic, risk_controlled_threshold

    calibrator = fit_isotonic(confidence, correct, method="inv_entropy")
    control = risk_controlled_threshold(calibrator.apply(confidence), correct, alpha=0.1)
    calibrator.with_risk_control(control).save("calib.json")
    guard = uq_guard.guard(model, calibration="calib.json", policy="abstain",
                           threshold=control.threshold)

This module *applies* calibrators and needs only numpy and scipy, so a
deployed guard carries neither scikit-learn nor :mod:`uq_guard.evaluation`,
and imports nothing from it. The fitting functions (``fit_platt``,
``fit_isotonic``, ``fit_calibrator``, ``risk_controlled_threshold``,
``fit_fused``) live in :mod:`uq_guard.evaluation.calibrators` and
:mod:`uq_guard.evaluation.fusion` (they need the ``eval`` extra).

Three kinds of map:

* ``platt`` / ``isotonic`` over one number: the guard's label-free
  confidence (``score`` unset) or one entry of the report's ``scores``.
* ``fused``: a logistic regression over several scores (``uq-guard calibrate
  --fuse``, :func:`uq_guard.evaluation.fusion.fit_fused`). Each feature is a
  score turned the confidence way (:func:`uq_guard.report.score_as_confidence`)
  or ``guard_confidence``, the label-free confidence; it is standardised with
  the stored training mean and scale and clipped to ``±clip``; the logit may
  be followed by a monotone ``recalibration`` (Platt or isotonic on the
  logit). A fused file holds *sub-models*: ``models[0]`` reads every feature;
  the others were fitted without a group of features a call may lack (the
  log-probability scores when the backend returns none, the verbalized
  confidence when it was not asked for, the perturbation scores when no
  perturbed prompt was answered). A call uses the first model whose features
  it has, silently: each is a model fitted for that case. Only when no model
  fits does it impute: the model missing the fewest features reads their
  training means (a standardised 0) and the report says so
  (``"fused calibration: gnll missing, imputed its training mean"``, which
  marks it degraded). With none of a model's features, nothing is calibrated.

The JSON file (``format: "uq_guard.calibration"``)::

    {"format": "uq_guard.calibration", "version": 1, "method": "inv_entropy",
     "score": null, "mapping": {"kind": "isotonic", "x": [...], "y": [...]},
     "n_fitted": 500, "n_correct": 231, "risk_control": {...} or null}

and for a fused calibrator (``version: 2``; older readers refuse it by version)::

    {"format": "uq_guard.calibration", "version": 2, "method": "inv_entropy",
     "score": null, "n_fitted": 900, "n_correct": 137, "risk_control": {...} or null,
     "mapping": {"kind": "fused", "clip": 5.0,
       "models": [{"features": ["gnll", "degree", ...], "means": [...], "scales": [...],
                   "coefficients": [...], "intercept": -1.2, "C": 0.1,
                   "recalibration": null or {"kind": "platt", ...} or {"kind": "isotonic", ...},
                   "n_fitted": 900, "n_correct": 137}, ...],
       "held_out": {"n_folds": 5, "seed": 0, "n": 900, "n_correct": 137,
                    "auroc": 0.81, "ece": 0.03, "smooth_ece": 0.02}}}

Both kinds may carry ``fitted_with``: the guard settings of the eval runs it
was fitted on (:data:`FITTED_WITH_KEYS`, read from each run's ``run.json`` by
``uq-guard calibrate``), e.g. ``{"n_perturbations": 4, "n_samples": 3,
"max_tokens": 24, "temperature": 0.7, "perturbation": "gaap", ...,
"system": "Answer in a few words."}``, or null when unknown (files written
before the field existed read as null). These settings change the scores'
distributions, so a map fitted under one set of them is only a guess under
another: a :class:`~uq_guard.Guard` whose settings differ says so in every
report. ``system`` is the eval run's system message, which the guard cannot
see; it is recorded for the reader, not compared.

``method`` of a fused calibrator is the scorer behind the training records'
confidence; a call whose confidence came from another scorer (no perturbed
prompt answered) treats the perturbation scores and ``guard_confidence`` as
missing, since they no longer mean what they meant in training.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy.special import expit
from scipy.stats import beta

from uq_guard._exceptions import ConfigurationError
from uq_guard.report import score_as_confidence

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "FEATURE_GROUPS",
    "FITTED_WITH_KEYS",
    "GUARD_CONFIDENCE",
    "CalibratedConfidence",
    "Calibrator",
    "FusedMapping",
    "FusedPrediction",
    "HeldOutMetrics",
    "IsotonicMapping",
    "LogisticModel",
    "PlattMapping",
    "RiskControl",
    "clopper_pearson_upper",
    "feature_values",
    "load_calibration",
    "resolve_calibration",
]

CALIBRATION_FORMAT = "uq_guard.calibration"
#: The newest file version this reads. Platt and isotonic files are written as
#: version 1 (readable by every uq-guard); a fused mapping needs version 2.
CALIBRATION_VERSION = 2
_SINGLE_VERSION = 1
_FUSED_VERSION = 2

#: The settings of an eval run that change the distribution of the scores a
#: calibrator is fitted on; ``uq-guard calibrate`` stores them as ``fitted_with``.
FITTED_WITH_KEYS: tuple[str, ...] = (
    "n_perturbations",
    "n_samples",
    "max_tokens",
    "temperature",
    "perturbation",
    "gaap_edits",
    "gaap_frames",
    "similarity",
    "n_bootstrap",
    "cluster_threshold",
    "embedding_model",
    "system",
)

#: The feature name of the guard's label-free confidence in a fused calibrator.
GUARD_CONFIDENCE = "guard_confidence"

#: Scores a call may lack as a group, and why. A fused calibrator carries a
#: sub-model without each group (and each union of them) it reads.
FEATURE_GROUPS: dict[str, frozenset[str]] = {
    "log-probabilities": frozenset({"gnll", "mean_token_entropy", "entropy_area_score"}),
    "verbalized confidence": frozenset({"verbalized_confidence"}),
    "perturbations": frozenset(
        {
            "inv_entropy",
            "forward_entropy",
            "conditional_entropy",
            "max_output_mass",
            "marginal_wasserstein",
            "prompt_semantic_volume",
            GUARD_CONFIDENCE,
        }
    ),
}

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _checked_input(values: Any, *, unit: bool) -> np.ndarray:
    """Finite, non-empty 1-D floats (inside [0, 1] with ``unit``), or a ConfigurationError."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"confidence must be numbers, got {type(values).__name__}: {exc}"
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ConfigurationError(f"confidence must be a non-empty 1-D array, got {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigurationError(
            f"confidence has {int((~np.isfinite(array)).sum())} NaN or infinite value(s)"
        )
    if unit and (array.min() < 0.0 or array.max() > 1.0):
        raise ConfigurationError(
            "confidence must lie in [0, 1] (it is read as a probability), got values from "
            f"{array.min():g} to {array.max():g}"
        )
    return array


class PlattMapping(BaseModel):
    """``P(correct) = 1 / (1 + exp(-(slope * confidence + intercept)))``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["platt"] = "platt"
    slope: float = Field(allow_inf_nan=False)
    intercept: float = Field(allow_inf_nan=False)

    def apply(self, confidence: np.ndarray) -> np.ndarray:
        return expit(self.slope * confidence + self.intercept)


class IsotonicMapping(BaseModel):
    """A non-decreasing step-and-ramp map: linear between the knots ``(x, y)``, flat outside."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["isotonic"] = "isotonic"
    x: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)
    y: list[Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _knots(self) -> IsotonicMapping:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"x and y must have the same length, got {len(self.x)} and {len(self.y)}"
            )
        if any(b < a for a, b in itertools.pairwise(self.x)):
            raise ValueError("x must be non-decreasing")
        if any(b < a for a, b in itertools.pairwise(self.y)):
            raise ValueError("y must be non-decreasing (an isotonic map never goes down)")
        return self

    def apply(self, confidence: np.ndarray) -> np.ndarray:
        return np.interp(confidence, self.x, self.y)  # clips to y[0], y[-1] outside the knots


class RiskControl(BaseModel):
    """A risk-controlled abstention threshold.

    Fitted by :func:`uq_guard.evaluation.calibrators.risk_controlled_threshold`.

    Attributes:
        alpha: target error rate among answered questions.
        delta: allowed probability that the true answered error rate exceeds alpha.
        feasible: a threshold qualified; when False ``threshold`` is None and
            the guard should abstain on everything (or alpha is too strict for
            this score and this much data).
        threshold: answer when ``confidence >= threshold``; pass it as
            ``GuardConfig.threshold`` (policies act on ``confidence < threshold``).
        coverage: share of the calibration questions it answers.
        n / n_answered / n_errors: calibration questions, those answered, the wrong among them.
        error_rate: ``n_errors / n_answered`` (0 when nothing is answered).
        error_upper_bound: the Clopper–Pearson upper bound at level delta.
        reason: a sentence saying what was found.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(gt=0.0, lt=1.0)
    delta: float = Field(gt=0.0, lt=1.0)
    feasible: bool
    threshold: float | None
    coverage: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=0)
    n_answered: int = Field(ge=0)
    n_errors: int = Field(ge=0)
    error_rate: float = Field(ge=0.0, le=1.0)
    error_upper_bound: float = Field(ge=0.0, le=1.0)
    reason: str = ""


class LogisticModel(BaseModel):
    """One logistic regression over standardised scores: a model of a fused calibrator.

    ``P(correct) = recalibration(logit)`` (``expit(logit)`` without one), where
    ``logit = intercept + sum(coefficients * z)`` and
    ``z = clip((x - means) / scales, -clip, clip)``, ``x`` being the features
    as confidences (:func:`feature_values`). A missing feature reads its
    training mean (``z = 0``).

    Attributes:
        features: the score names it reads (``guard_confidence`` = the label-free confidence).
        means / scales: each feature's training mean and standard deviation.
        coefficients / intercept: the fitted regression on the standardised features.
        C: scikit-learn's inverse L2 strength it was fitted with.
        recalibration: a monotone map of the logit, when it improved the
            cross-fitted calibration error; None = ``expit``.
        n_fitted / n_correct: the labelled questions it was fitted on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str] = Field(min_length=1)
    means: list[FiniteFloat]
    scales: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]]
    coefficients: list[FiniteFloat]
    intercept: FiniteFloat
    C: float = Field(gt=0.0, allow_inf_nan=False)
    recalibration: PlattMapping | IsotonicMapping | None = Field(None, discriminator="kind")
    n_fitted: int = Field(0, ge=0)
    n_correct: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _shapes(self) -> LogisticModel:
        k = len(self.features)
        if len(set(self.features)) != k:
            raise ValueError(f"features must be distinct, got {self.features}")
        for name in ("means", "scales", "coefficients"):
            if len(getattr(self, name)) != k:
                raise ValueError(
                    f"{name} must have one value per feature ({k}), got {len(getattr(self, name))}"
                )
        return self

    def logit(self, values: np.ndarray, clip: float) -> np.ndarray:
        """The linear predictor for rows of feature values (NaN = missing, read as the mean)."""
        z = (np.asarray(values, dtype=float) - np.asarray(self.means)) / np.asarray(self.scales)
        z = np.where(np.isfinite(z), np.clip(z, -clip, clip), 0.0)
        return self.intercept + z @ np.asarray(self.coefficients)

    def probability(self, values: np.ndarray, clip: float) -> np.ndarray:
        """P(correct) for rows of feature values (NaN = missing, read as the mean)."""
        logit = self.logit(values, clip)
        fused = expit(logit) if self.recalibration is None else self.recalibration.apply(logit)
        return np.clip(fused, 0.0, 1.0)


class HeldOutMetrics(BaseModel):
    """How the fused calibrator did out of sample, as the guard applies it (fallbacks included).

    Cross-fitted: each question's probability came from the whole fitting
    procedure (feature scaling, the choice of ``C`` and of the recalibration)
    run without that question's fold.

    Attributes:
        n_folds / seed: the stratified folds.
        n / n_correct: the questions that got a probability, and the right ones among them.
        auroc: None when the questions are all right or all wrong.
        ece / smooth_ece: 15 equal-mass bins / Błasiok & Nakkiran's smooth ECE.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_folds: int = Field(ge=2)
    seed: int
    n: int = Field(ge=0)
    n_correct: int = Field(ge=0)
    auroc: float | None = Field(None, ge=0.0, le=1.0)
    ece: float = Field(ge=0.0, le=1.0)
    smooth_ece: float = Field(ge=0.0, le=1.0)


@dataclass(frozen=True)
class FusedPrediction:
    """What a fused mapping made of some rows of feature values.

    Attributes:
        probability: P(correct) per row; NaN where no model had any of its features.
        model: the index of the model used per row (into ``FusedMapping.models``), -1 for none.
        imputed: ``(rows, features)``: the features read as their training mean.
    """

    probability: np.ndarray
    model: np.ndarray
    imputed: np.ndarray


class FusedMapping(BaseModel):
    """A logistic regression over several scores, with sub-models for calls that lack some.

    See the module docstring. ``models[0]`` reads every feature; each other
    model reads a subset of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fused"] = "fused"
    models: list[LogisticModel] = Field(min_length=1)
    clip: float = Field(5.0, gt=0.0, allow_inf_nan=False)
    held_out: HeldOutMetrics | None = None

    @model_validator(mode="after")
    def _sub_models(self) -> FusedMapping:
        full = set(self.models[0].features)
        seen: set[frozenset[str]] = set()
        for index, model in enumerate(self.models):
            extra = set(model.features) - full
            if extra:
                raise ValueError(
                    f"models[{index}] reads {sorted(extra)}, which models[0] does not; "
                    "a sub-model reads a subset of the full model's features"
                )
            key = frozenset(model.features)
            if key in seen:
                raise ValueError(f"models[{index}] repeats the feature set of an earlier model")
            seen.add(key)
        return self

    @property
    def features(self) -> list[str]:
        """Every feature the mapping reads, in column order (those of ``models[0]``)."""
        return list(self.models[0].features)

    def predict(self, table: Any) -> FusedPrediction:
        """P(correct) for rows of feature values in ``features`` order (NaN or inf = missing).

        Each row uses the first model whose features it has; a row with none
        complete uses the model missing the fewest (the earlier on a tie)
        with its missing features imputed; a row without any feature of that
        model gets NaN.
        """
        values = np.asarray(table, dtype=float)
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise ConfigurationError(
                f"a fused calibrator needs rows of {len(self.features)} feature values "
                f"({', '.join(self.features)}), got shape {values.shape}"
            )
        present = np.isfinite(values)
        column = {name: i for i, name in enumerate(self.features)}
        columns = [np.array([column[f] for f in m.features]) for m in self.models]
        n = values.shape[0]
        choice = np.full(n, -1)
        for index, cols in enumerate(columns):
            choice[(choice < 0) & present[:, cols].all(axis=1)] = index
        if (choice < 0).any():
            usable = np.stack([present[:, cols].any(axis=1) for cols in columns], axis=1)
            missing = np.stack([(~present[:, cols]).sum(axis=1) for cols in columns], axis=1)
            best = np.where(usable, missing, np.iinfo(np.int64).max).argmin(axis=1)
            pick = (choice < 0) & usable[np.arange(n), best]
            choice[pick] = best[pick]
        probability = np.full(n, np.nan)
        imputed = np.zeros(values.shape, dtype=bool)
        for index, cols in enumerate(columns):
            rows = np.flatnonzero(choice == index)
            if rows.size:
                block = values[np.ix_(rows, cols)]
                probability[rows] = self.models[index].probability(block, self.clip)
                imputed[np.ix_(rows, cols)] = ~np.isfinite(block)
        return FusedPrediction(probability=probability, model=choice, imputed=imputed)


@dataclass(frozen=True)
class CalibratedConfidence:
    """A calibrator's reading of one call.

    Attributes:
        probability: the fitted P(correct), or None when the calibrator does
            not apply to this call (``note`` says why).
        note: why it does not apply, or what it had to impute (then the
            report is marked degraded); empty when all went as fitted.
    """

    probability: float | None
    note: str = ""


def feature_values(
    scores: Mapping[str, float | None],
    features: Sequence[str],
    *,
    confidence: float | None = None,
    missing: frozenset[str] = frozenset(),
) -> np.ndarray:
    """One row of a fused calibrator's features: scores as confidences, NaN where missing.

    Args:
        scores: a report's (or an eval record's) ``scores``.
        features: score names, or ``guard_confidence`` for ``confidence``.
        confidence: the guard's label-free confidence.
        missing: features to read as missing whatever their value.
    """
    row = np.full(len(features), np.nan)
    for i, name in enumerate(features):
        if name in missing:
            continue
        value = confidence if name == GUARD_CONFIDENCE else scores.get(name)
        if value is None or not math.isfinite(value):
            continue
        row[i] = value if name == GUARD_CONFIDENCE else score_as_confidence(name, value)
    return row


class Calibrator(BaseModel):
    """A fitted map from a guard's confidence (or scores) to P(correct), as saved in JSON.

    Attributes:
        version: the file format: 1 for a Platt or isotonic map, 2 for a fused
            one (filled in when not given).
        method: the scorer whose confidence it was fitted on (``inv_entropy``,
            ``degree``, ...); the engine applies a Platt or isotonic map only
            to reports of that method. For a fused map: the scorer behind the
            training records' confidence (see the module docstring). None = any.
        score: when set, the map reads this entry of the report's ``scores``
            (e.g. ``"gnll"`` or ``"inv_entropy"``, uncertainties negated: see
            :func:`uq_guard.report.score_as_confidence`) instead of the
            label-free ``confidence``; its input is then any real number.
            This is how the best-ranking score of an eval run becomes the
            guard's P(correct). None = the guard's own confidence, in [0, 1].
            Always None for a fused map, which names its own features.
        mapping: the Platt, isotonic or fused map.
        n_fitted / n_correct: the labelled pairs it was fitted on.
        risk_control: an optional risk-controlled threshold on the calibrated scale.
        fitted_with: the eval settings it was fitted under (keys of
            :data:`FITTED_WITH_KEYS`, JSON values), or None when unknown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["uq_guard.calibration"] = CALIBRATION_FORMAT
    version: int = _SINGLE_VERSION
    method: str | None = None
    score: str | None = None
    mapping: PlattMapping | IsotonicMapping | FusedMapping = Field(discriminator="kind")
    n_fitted: int = Field(0, ge=0)
    n_correct: int = Field(0, ge=0)
    risk_control: RiskControl | None = None
    fitted_with: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "version" not in data:
            mapping = data.get("mapping")
            kind = (
                mapping.get("kind") if isinstance(mapping, dict) else getattr(mapping, "kind", "")
            )
            if kind == "fused":
                return {**data, "version": _FUSED_VERSION}
        return data

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if not _SINGLE_VERSION <= value <= CALIBRATION_VERSION:
            raise ValueError(
                f"calibration format version {value} is not supported; this uq_guard reads "
                f"versions {_SINGLE_VERSION} to {CALIBRATION_VERSION} (refit with this version, "
                "or upgrade uq-guard)"
            )
        return value

    @model_validator(mode="after")
    def _fused_fields(self) -> Calibrator:
        if isinstance(self.mapping, FusedMapping):
            if self.version < _FUSED_VERSION:
                raise ValueError(f"a fused mapping needs format version {_FUSED_VERSION}")
            if self.score is not None:
                raise ValueError("a fused mapping names its features; score must be null")
        return self

    @property
    def kind(self) -> str:
        return self.mapping.kind

    @property
    def fused(self) -> bool:
        """True for a fused map (read it with :meth:`calibrate`, not :meth:`apply`)."""
        return isinstance(self.mapping, FusedMapping)

    @overload
    def apply(self, confidence: float) -> float: ...
    @overload
    def apply(self, confidence: np.ndarray | list[float]) -> np.ndarray: ...

    def apply(self, confidence: Any) -> Any:
        """P(correct) for a confidence (a float) or an array of them.

        With ``score`` set, the input is that score as a confidence (any real).

        Raises:
            ConfigurationError: NaN or infinite input, (``score`` unset) a
                confidence outside [0, 1], or a fused map (it reads several
                scores: use :meth:`calibrate` or ``mapping.predict``).
        """
        mapping = self.mapping
        if isinstance(mapping, FusedMapping):
            raise ConfigurationError(
                "a fused calibrator reads several scores "
                f"({', '.join(mapping.features)}), not one confidence; use "
                "Calibrator.calibrate(scores, confidence=...) or mapping.predict(rows)"
            )
        unit = self.score is None
        if np.ndim(confidence) == 0:
            value = _checked_input([confidence], unit=unit)
            return float(np.clip(mapping.apply(value), 0.0, 1.0)[0])
        values = _checked_input(confidence, unit=unit)
        return np.clip(mapping.apply(values), 0.0, 1.0)

    def calibrate(
        self,
        scores: Mapping[str, float | None],
        *,
        confidence: float | None = None,
        method: str | None = None,
    ) -> CalibratedConfidence:
        """P(correct) for one call from what its report holds, or why there is none.

        Args:
            scores: the call's ``scores`` (raw: uncertainties as uncertainties).
            confidence: its label-free confidence.
            method: the scorer behind ``confidence``.
        """
        mapping = self.mapping
        if isinstance(mapping, FusedMapping):
            return self._calibrate_fused(mapping, scores, confidence, method)
        if self.score is not None:
            value = scores.get(self.score)
            if value is None or not math.isfinite(value):
                return CalibratedConfidence(
                    None, f"calibration reads score {self.score!r}, which this call lacks"
                )
            return CalibratedConfidence(self.apply(score_as_confidence(self.score, value)))
        if self.method is not None and method is not None and method != self.method:
            return CalibratedConfidence(
                None,
                f"calibration was fitted on {self.method!r} confidence but this call's "
                f"confidence came from {method!r}",
            )
        if confidence is None:
            return CalibratedConfidence(None, "no confidence to calibrate")
        return CalibratedConfidence(self.apply(confidence))

    def _calibrate_fused(
        self,
        mapping: FusedMapping,
        scores: Mapping[str, float | None],
        confidence: float | None,
        method: str | None,
    ) -> CalibratedConfidence:
        other_path = self.method is not None and method is not None and method != self.method
        row = feature_values(
            scores,
            mapping.features,
            confidence=confidence,
            missing=FEATURE_GROUPS["perturbations"] if other_path else frozenset(),
        )
        prediction = mapping.predict(row[None, :])
        if prediction.model[0] < 0:
            return CalibratedConfidence(
                None,
                f"fused calibration reads {', '.join(mapping.features)}; this call has none of "
                "them",
            )
        imputed = [
            f for f, flag in zip(mapping.features, prediction.imputed[0], strict=True) if flag
        ]
        note = ""
        if imputed:
            which = "its training mean" if len(imputed) == 1 else "their training means"
            note = f"fused calibration: {', '.join(imputed)} missing, imputed {which}"
        return CalibratedConfidence(float(prediction.probability[0]), note)

    def settings_note(self, settings: Mapping[str, Any]) -> str:
        """What a guard with ``settings`` does differently from the runs this was fitted on.

        Compares each ``fitted_with`` key that ``settings`` (a guard's
        settings, e.g. ``dict(config)``) also has, except ``system``, which a
        guard cannot see. Returns an informational sentence naming each
        difference, or ``""`` when none differs or ``fitted_with`` is unknown.
        """
        if not self.fitted_with:
            return ""
        differ = [
            (key, fitted, settings[key])
            for key, fitted in self.fitted_with.items()
            if key != "system" and key in settings and not _same_setting(fitted, settings[key])
        ]
        if not differ:
            return ""
        fitted_text = ", ".join(f"{key}={_show_setting(v)}" for key, v, _ in differ)
        used_text = ", ".join(f"{key}={_show_setting(v)}" for key, _, v in differ)
        return (
            f"calibration fitted with {fitted_text}; this guard uses {used_text}: "
            "its P(correct) may be off"
        )

    @property
    def base_rate(self) -> float | None:
        """The share of right answers in the data it was fitted on; None when unknown.

        On the calibrated scale this is the *neutral* threshold: a P(correct)
        below it means the scores made a wrong answer more likely than it was
        before looking at them (a likelihood ratio below 1). Abstaining under
        it weighs a wrongly kept wrong answer and a wrongly withheld right one
        equally, whatever the model's accuracy, where 0.5 ("more likely wrong
        than right") withholds most right answers of a model that is usually
        wrong. :func:`uq_guard_hf.shipped_guard_defaults` uses it as the
        default threshold.
        """
        if self.n_fitted == 0:
            return None
        return self.n_correct / self.n_fitted

    def with_risk_control(self, control: RiskControl) -> Calibrator:
        """A copy carrying ``control`` (computed on this calibrator's output)."""
        return self.model_copy(update={"risk_control": control})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the calibrator as JSON to ``path`` (parents created); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json() + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        """Read and validate a calibration file (see :func:`load_calibration`)."""
        return load_calibration(path)


def load_calibration(path: str | Path) -> Calibrator:
    """Read a calibration file written by :meth:`Calibrator.save`.

    Raises:
        ConfigurationError: the file is missing or unreadable, not JSON, not a
            uq_guard calibration file, of an unknown version, or has bad
            fields (each named, with its value).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"calibration file {str(source)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"calibration file {str(source)!r} cannot be read: {exc}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"calibration file {str(source)!r} is not JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigurationError(
            f"{str(source)!r} is not a uq_guard calibration file (format is {found!r}, expected "
            f"{CALIBRATION_FORMAT!r}); write one with Calibrator.save or `uq-guard calibrate`"
        )
    try:
        return Calibrator.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"calibration file {str(source)!r}: {_describe(exc)}") from None


def resolve_calibration(value: str | Path | Calibrator | None) -> Calibrator | None:
    """A :class:`Calibrator` from what ``GuardConfig.calibration`` holds (a path, one, or None)."""
    if value is None or isinstance(value, Calibrator):
        return value
    return load_calibration(value)


def _same_setting(fitted: Any, used: Any) -> bool:
    if callable(used):  # a custom function: run.json holds its repr, never equal to a name
        return fitted == repr(used)
    numbers = (int, float)
    if (
        isinstance(fitted, numbers)
        and isinstance(used, numbers)
        and not isinstance(fitted, bool)
        and not isinstance(used, bool)
    ):
        return math.isclose(fitted, used, rel_tol=1e-9, abs_tol=1e-12)
    return bool(fitted == used)


def _show_setting(value: Any) -> str:
    if callable(value):
        return getattr(value, "__qualname__", None) or getattr(value, "__name__", repr(value))
    return repr(value) if isinstance(value, str) else str(value)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "file"
        parts.append(f"{where}={err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Risk control (the threshold is fitted in uq_guard.evaluation.calibrators)
# ---------------------------------------------------------------------------


def clopper_pearson_upper(n_errors: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson upper bound on an error rate at level ``delta``.

    The true rate is below the bound with probability at least ``1 - delta``:
    ``Beta(1 - delta; n_errors + 1, n - n_errors)``, and 1 when
    ``n_errors == n`` or ``n == 0`` (nothing observed bounds nothing).

    Raises:
        ConfigurationError: counts out of range or ``delta`` not in (0, 1).
    """
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta}")
    if n < 0 or not 0 <= n_errors <= n:
        raise ConfigurationError(f"need 0 <= n_errors <= n, got n_errors={n_errors}, n={n}")
    if n_errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, n_errors + 1, n - n_errors))
