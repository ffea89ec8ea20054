"""What the eval report calls a method: its name, its confidence per record, its row.

A method is one score of the records (``gnll``, ``inv_entropy``...), the
guard's own reported confidence (:data:`GUARD_CONFIDENCE`) or, in a
calibrated run, the label-free confidence its calibration mapped
(:data:`LABEL_FREE_CONFIDENCE`). :func:`method_signal` turns a method into
``(confidence, correct)`` arrays, uncertainties negated. The table
(:mod:`uq_guard.evaluation.report`) and the plots
(:mod:`uq_guard.evaluation.plots`) both read methods through here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uq_guard.evaluation.metrics import MetricSummary
from uq_guard.evaluation.records import EvalRecord, label_free_confidence
from uq_guard.report import score_as_confidence

__all__ = [
    "GUARD_CONFIDENCE",
    "LABEL_FREE_CONFIDENCE",
    "MethodRow",
    "confidence_of",
    "method_signal",
]

GUARD_CONFIDENCE = "guard_confidence"
#: The label-free confidence of a calibrated run (the value its calibration mapped).
LABEL_FREE_CONFIDENCE = "label_free_confidence"


@dataclass
class MethodRow:
    """One method's line of the table.

    Attributes:
        method: the score's name (``guard_confidence`` for the guard's own).
        summary: its metrics with intervals, and the undefined ones with why.
        needs: what the method needs: ``reply`` (white-box), ``reply + 1 call``
            (verbalized), ``x0 samples`` or ``all``.
        calls_per_question / seconds_per_question: what the run spent per question on it.
        n_missing: questions where the method had no value (left out of its metrics).
    """

    method: str
    summary: MetricSummary
    needs: str
    calls_per_question: float
    seconds_per_question: float
    n_missing: int = 0
    notes: list[str] = field(default_factory=list)


def method_signal(records: Sequence[EvalRecord], method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` of one method over the records where it has a value.

    Uncertainties are negated; confidence-like scores and ``guard_confidence`` are kept.
    """
    conf, correct = [], []
    for record in records:
        value = confidence_of(record, method)
        if value is not None:
            conf.append(value)
            correct.append(bool(record.correct))
    return np.asarray(conf, dtype=float), np.asarray(correct, dtype=bool)


def confidence_of(record: EvalRecord, method: str) -> float | None:
    """One record's value of ``method`` as a confidence (uncertainties negated); None if missing."""
    if method in (GUARD_CONFIDENCE, LABEL_FREE_CONFIDENCE):
        value = record.confidence if method == GUARD_CONFIDENCE else label_free_confidence(record)
        return value if value is not None and math.isfinite(value) else None
    value = record.scores.get(method)
    if value is None or not math.isfinite(value):
        return None
    return score_as_confidence(method, value)
