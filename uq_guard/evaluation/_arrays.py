"""Input checks shared by the metrics and the calibrators.

Every public function of :mod:`uq_guard.evaluation` and
:mod:`uq_guard.calibration` takes plain arrays (lists, numpy arrays) of
*confidence* (higher = trust the answer more) and *correctness* (1/True =
the answer was right). These helpers turn them into float arrays or fail with
a :class:`~uq_guard.ConfigurationError` that names the argument and the
problem: empty input, different lengths, NaN or infinite scores, labels that
are not 0/1, confidences outside [0, 1] where a probability is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError, MissingDependencyError

__all__ = ["as_confidence", "as_correct", "as_pair", "import_sklearn"]


def _as_1d(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{name} must be numbers, got {type(values).__name__}: {exc}"
        ) from None
    if array.ndim != 1:
        raise ConfigurationError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ConfigurationError(f"{name} is empty: a metric needs at least one question")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ConfigurationError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) (first at index {first}, "
            f"{array[first]!r}); drop or fill those questions first"
        )
    return array


def _within_unit(array: np.ndarray, name: str, why: str = "") -> np.ndarray:
    if array.min() < 0.0 or array.max() > 1.0:
        raise ConfigurationError(
            f"{name} must lie in [0, 1]{why}, got values from {array.min():g} to {array.max():g}"
        )
    return array


def as_confidence(values: Any, name: str = "confidence", *, unit: bool = False) -> np.ndarray:
    """A finite, non-empty 1-D float array; with ``unit=True`` also inside [0, 1]."""
    array = _as_1d(values, name)
    return _within_unit(array, name, " (it is read as a probability)") if unit else array


def as_correct(values: Any, name: str = "correct", *, graded: bool = False) -> np.ndarray:
    """Correctness labels as floats: 0/1 (bool accepted), or any value in [0, 1] if ``graded``."""
    array = _as_1d(values, name)
    if graded:
        return _within_unit(array, name)
    if not np.isin(array, (0.0, 1.0)).all():
        odd = array[~np.isin(array, (0.0, 1.0))][:3].tolist()
        raise ConfigurationError(f"{name} must be 0/1 or True/False, got values such as {odd}")
    return array


def as_pair(
    confidence: Any, correct: Any, *, unit: bool = False, graded: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(confidence, correct)`` arrays of the same length."""
    conf = as_confidence(confidence, unit=unit)
    corr = as_correct(correct, graded=graded)
    if conf.shape != corr.shape:
        raise ConfigurationError(
            f"confidence and correct must have the same length, got {conf.size} and {corr.size}"
        )
    return conf, corr


def import_sklearn(feature: str) -> Any:
    """The ``sklearn`` package, or a :class:`MissingDependencyError` naming the ``eval`` extra."""
    try:
        import sklearn
        import sklearn.isotonic
        import sklearn.linear_model
        import sklearn.model_selection
    except ImportError:
        raise MissingDependencyError(feature, "eval") from None
    return sklearn
