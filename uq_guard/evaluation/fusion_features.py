"""The data a fused calibrator is fitted on: which scores it reads, as a table of confidences.

Records (or score dicts with labels) become :class:`FusedData`: one row a
question, one column a feature, each score turned the confidence way, NaN
where a score is missing. Which scores are the default features, and why
only those that read the answers, is told in :mod:`uq_guard.evaluation.fusion`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import FEATURE_GROUPS, GUARD_CONFIDENCE, feature_values
from uq_guard.evaluation._arrays import as_correct
from uq_guard.evaluation.records import label_free_confidence

__all__ = [
    "ANSWER_SCORES",
    "DEFAULT_MIN_PRESENCE",
    "FusedData",
    "fused_data",
    "select_features",
]

DEFAULT_MIN_PRESENCE = 0.95


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
        "max_token_nll",
        "reply_agreement",
        "reply_agreement_perturbed",
        "reply_word_agreement",
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
