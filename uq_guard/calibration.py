"""Calibrators (confidence -> P(correct)) and risk-controlled abstention thresholds.

ALGORITHMS.md §6. Fit on labelled ``(confidence, correct)`` pairs from an
evaluation run, save to JSON, and load it in :class:`~uq_guard.GuardConfig`
(``calibration="calib.json"``): every report's ``confidence`` then is the
fitted P(correct) and ``calibrated`` is true::

    from uq_guard.calibration import fit_isotonic, risk_controlled_threshold

    calibrator = fit_isotonic(confidence, correct, method="inv_entropy")
    control = risk_controlled_threshold(calibrator.apply(confidence), correct, alpha=0.1)
    calibrator.with_risk_control(control).save("calib.json")
    guard = uq_guard.guard(model, calibration="calib.json", policy="abstain",
                           threshold=control.threshold)

Fitting needs scikit-learn (the ``eval`` extra); *applying* a saved
calibrator needs only numpy, so a deployed guard does not carry scikit-learn.

The JSON file (``format: "uq_guard.calibration"``, ``version: 1``)::

    {"format": "uq_guard.calibration", "version": 1, "method": "inv_entropy",
     "score": null, "mapping": {"kind": "isotonic", "x": [...], "y": [...]},
     "n_fitted": 500, "n_correct": 231, "risk_control": {...} or null}
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy.special import expit
from scipy.stats import beta

from uq_guard._exceptions import ConfigurationError
from uq_guard.evaluation._arrays import as_confidence, as_pair, import_sklearn
from uq_guard.evaluation.metrics import risk_coverage_curve

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "Calibrator",
    "IsotonicMapping",
    "PlattMapping",
    "RiskControl",
    "clopper_pearson_upper",
    "fit_calibrator",
    "fit_isotonic",
    "fit_platt",
    "load_calibration",
    "resolve_calibration",
    "risk_controlled_threshold",
]

CALIBRATION_FORMAT = "uq_guard.calibration"
CALIBRATION_VERSION = 1


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
    """A risk-controlled abstention threshold (see :func:`risk_controlled_threshold`).

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


class Calibrator(BaseModel):
    """A fitted map from a guard's confidence to P(correct), as saved in JSON.

    Attributes:
        method: the scorer whose confidence it was fitted on (``inv_entropy``,
            ``degree``, ...); the engine applies it only to reports of that
            method. None = any.
        score: when set, the map reads this entry of the report's ``scores``
            (e.g. ``"gnll"`` or ``"inv_entropy"``, uncertainties negated: see
            :func:`uq_guard.report.score_as_confidence`) instead of the
            label-free ``confidence``; its input is then any real number.
            This is how the best-ranking score of an eval run becomes the
            guard's P(correct). None = the guard's own confidence, in [0, 1].
        mapping: the Platt or isotonic map.
        n_fitted / n_correct: the labelled pairs it was fitted on.
        risk_control: an optional risk-controlled threshold on the calibrated scale.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["uq_guard.calibration"] = CALIBRATION_FORMAT
    version: int = CALIBRATION_VERSION
    method: str | None = None
    score: str | None = None
    mapping: PlattMapping | IsotonicMapping = Field(discriminator="kind")
    n_fitted: int = Field(0, ge=0)
    n_correct: int = Field(0, ge=0)
    risk_control: RiskControl | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CALIBRATION_VERSION:
            raise ValueError(
                f"calibration format version {value} is not supported; this uq_guard reads "
                f"version {CALIBRATION_VERSION} (refit with this version, or upgrade uq-guard)"
            )
        return value

    @property
    def kind(self) -> str:
        return self.mapping.kind

    @overload
    def apply(self, confidence: float) -> float: ...
    @overload
    def apply(self, confidence: np.ndarray | list[float]) -> np.ndarray: ...

    def apply(self, confidence: Any) -> Any:
        """P(correct) for a confidence (a float) or an array of them.

        With ``score`` set, the input is that score as a confidence (any real).

        Raises:
            ConfigurationError: NaN or infinite input, or (``score`` unset) a
                confidence outside [0, 1].
        """
        unit = self.score is None
        if np.ndim(confidence) == 0:
            value = as_confidence([confidence], unit=unit)
            return float(np.clip(self.mapping.apply(value), 0.0, 1.0)[0])
        values = as_confidence(confidence, unit=unit)
        return np.clip(self.mapping.apply(values), 0.0, 1.0)

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


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "file"
        parts.append(f"{where}={err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------


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
