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

The maps (Platt, isotonic, fused) live in :mod:`uq_guard._calibration_maps`
and risk control in :mod:`uq_guard._risk_control`; this module re-exports them
and holds the file: :class:`Calibrator`, :func:`load_calibration`.

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

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from uq_guard._calibration_maps import (
    FEATURE_GROUPS,
    GUARD_CONFIDENCE,
    CalibratedConfidence,
    FusedMapping,
    FusedPrediction,
    HeldOutMetrics,
    IsotonicMapping,
    LogisticModel,
    PlattMapping,
    checked_confidence,
    feature_values,
)
from uq_guard._exceptions import ConfigurationError
from uq_guard._risk_control import RiskControl, clopper_pearson_upper
from uq_guard.embeddings import embedding_model_identity
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
    "embedding_max_tokens",
    "embedding_backend",
    "system",
)


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
            value = checked_confidence([confidence], unit=unit)
            return float(np.clip(mapping.apply(value), 0.0, 1.0)[0])
        values = checked_confidence(confidence, unit=unit)
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
        other_path = self.method is not None and method is not None and method != self.method
        if isinstance(mapping, FusedMapping):
            # a confidence from another scorer: the perturbation features mean something else
            missing = FEATURE_GROUPS["perturbations"] if other_path else frozenset()
            return mapping.calibrate_call(scores, confidence=confidence, missing=missing)
        if self.score is not None:
            value = scores.get(self.score)
            if value is None or not math.isfinite(value):
                return CalibratedConfidence(
                    None, f"calibration reads score {self.score!r}, which this call lacks"
                )
            return CalibratedConfidence(self.apply(score_as_confidence(self.score, value)))
        if other_path:
            return CalibratedConfidence(
                None,
                f"calibration was fitted on {self.method!r} confidence but this call's "
                f"confidence came from {method!r}",
            )
        if confidence is None:
            return CalibratedConfidence(None, "no confidence to calibrate")
        return CalibratedConfidence(self.apply(confidence))

    def settings_note(self, settings: Mapping[str, Any]) -> str:
        """What a guard with ``settings`` does differently from the runs this was fitted on.

        Compares each ``fitted_with`` key that ``settings`` (a guard's
        settings, e.g. ``dict(config)``) also has, except ``system``, which a
        guard cannot see. ``embedding_model`` compares the model it names
        (:func:`~uq_guard.embeddings.embedding_model_identity`): a server spec
        whose ``#model`` is the bundled ``sentence-transformers/all-MiniLM-L6-v2``
        matches a calibration fitted with the local one. Returns an informational
        sentence naming each difference, or ``""`` when none differs or
        ``fitted_with`` is unknown.
        """
        if not self.fitted_with:
            return ""
        differ = [
            (key, fitted, settings[key])
            for key, fitted in self.fitted_with.items()
            if key != "system" and key in settings and not _same_setting(fitted, settings[key], key)
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


def _same_setting(fitted: Any, used: Any, key: str = "") -> bool:
    if key == "embedding_model" and all(isinstance(v, (str, type(None))) for v in (fitted, used)):
        return embedding_model_identity(fitted) == embedding_model_identity(used)
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
