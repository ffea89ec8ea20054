"""The maps of a calibration: confidence (or scores) -> P(correct).

Applied by :class:`uq_guard.calibration.Calibrator` (which re-exports every
name here); fitted in :mod:`uq_guard.evaluation.calibrators` and
:mod:`uq_guard.evaluation.fusion`. Needs only numpy and scipy.

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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import expit

from uq_guard._exceptions import ConfigurationError
from uq_guard.report import score_as_confidence
from uq_guard.scoring.whitebox import WHITEBOX_SCORES

__all__ = [
    "FEATURE_GROUPS",
    "GUARD_CONFIDENCE",
    "CalibratedConfidence",
    "FusedMapping",
    "FusedPrediction",
    "HeldOutMetrics",
    "IsotonicMapping",
    "LogisticModel",
    "PlattMapping",
    "checked_confidence",
    "feature_values",
]

#: The feature name of the guard's label-free confidence in a fused calibrator.
GUARD_CONFIDENCE = "guard_confidence"

#: Scores a call may lack as a group, and why. A fused calibrator carries a
#: sub-model without each group (and each union of them) it reads.
FEATURE_GROUPS: dict[str, frozenset[str]] = {
    "log-probabilities": WHITEBOX_SCORES,
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


def checked_confidence(values: Any, *, unit: bool) -> np.ndarray:
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

    def calibrate_call(
        self,
        scores: Mapping[str, float | None],
        *,
        confidence: float | None = None,
        missing: frozenset[str] = frozenset(),
    ) -> CalibratedConfidence:
        """P(correct) for one call's scores and confidence, or why there is none.

        ``missing``: features to read as missing whatever their value. The
        note names the features it had to impute (the report is then degraded).
        """
        row = feature_values(scores, self.features, confidence=confidence, missing=missing)
        prediction = self.predict(row[None, :])
        if prediction.model[0] < 0:
            return CalibratedConfidence(
                None,
                f"fused calibration reads {', '.join(self.features)}; this call has none of them",
            )
        imputed = [f for f, flag in zip(self.features, prediction.imputed[0], strict=True) if flag]
        note = ""
        if imputed:
            which = "its training mean" if len(imputed) == 1 else "their training means"
            note = f"fused calibration: {', '.join(imputed)} missing, imputed {which}"
        return CalibratedConfidence(float(prediction.probability[0]), note)


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
