"""Per-question records out: the ``records.jsonl`` file of an eval run.

A *records file* holds one :class:`EvalRecord` a line, appended and fsync'd as
each question finishes, so an interrupted run loses at most the question in
flight. When a question appears more than once (a failed question retried on
resume), the last line wins.

The questions that go in (question files, ``hf:`` data sets, gold answers)
are read by :mod:`uq_guard.evaluation.questions`; :func:`load_questions`,
:class:`EvalItem` and the rest of that side are importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uq_guard._exceptions import ConfigurationError
from uq_guard.evaluation.hf_datasets import HF_PREFIX, HUB_PROBE_TIMEOUT_S
from uq_guard.evaluation.questions import GOLD_FIELDS, EvalItem, gold_answers, load_questions

__all__ = [
    "GOLD_FIELDS",
    "HF_PREFIX",
    "HUB_PROBE_TIMEOUT_S",
    "EvalItem",
    "EvalRecord",
    "append_record",
    "compact_records",
    "gold_answers",
    "label_free_confidence",
    "latest_records",
    "load_questions",
    "read_records",
    "write_records",
]


class EvalRecord(BaseModel):
    """Everything one question produced: enough to re-score it without a model call.

    Attributes:
        id / question / gold: the question (see :class:`EvalItem`).
        system: the system message sent before the question, if any (every
            perturbation and sample carried it too).
        reply: the model's own reply to the question (greedy for local models).
        reply_token_logprobs / reply_token_entropies: per token of the reply, when the
            backend gave them.
        prompts: x_0 (the question) then the perturbations x_1..x_m that were sampled.
        samples: for each prompt, the answers sampled for it.
        perturbation_method / perturbation_lexicon / n_perturbations_real: how the
            perturbations were made and how many are real (not padding).
        scores: every score, by name (uncertainties except ``CONFIDENCE_LIKE_SCORES``;
            None where the score had no value).
        confidence / method: the guard's reported confidence and the scorer behind it.
        calibrated / raw_confidence: whether a calibration made ``confidence`` a
            P(correct), and then the label-free confidence it mapped (see
            :func:`label_free_confidence`).
        correct / correctness_rule / matched_gold: the verdict and which rule decided.
        sampling: temperature, n_samples and max_tokens the samples were drawn with,
            and reply_max_tokens, the reply's cap (None: not stated).
        sampling_stats: what the engine reports about its sampling rounds (adaptive
            sampling: answers requested, budget, rounds, early stop), when it does.
        scoring: the scoring settings (similarity, n_bootstrap, seed, cluster_threshold).
        model_calls / prompt_tokens / completion_tokens: what the question cost.
        reused_requests: requests answered from an earlier run's record instead of the model.
        seconds: wall time of the question; timings_ms: the engine's step timings.
        notes: why the estimate was degraded, if it was.
        error: set when the question failed (no reply); such records are retried on resume.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    question: str
    gold: list[str]
    system: str | None = None
    reply: str = ""
    reply_token_logprobs: list[float] | None = None
    reply_token_entropies: list[float] | None = None
    prompts: list[str] = Field(default_factory=list)
    samples: list[list[str]] = Field(default_factory=list)
    perturbation_method: str = "none"
    perturbation_lexicon: str | None = None
    n_perturbations_real: int = 0
    scores: dict[str, float | None] = Field(default_factory=dict)
    confidence: float | None = None
    method: str = "unavailable"
    calibrated: bool = False
    raw_confidence: float | None = None
    correct: bool = False
    correctness_rule: str = "none"
    matched_gold: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    sampling_stats: dict[str, Any] = Field(default_factory=dict)
    scoring: dict[str, Any] = Field(default_factory=dict)
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_requests: int = 0
    seconds: float = 0.0
    timings_ms: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The question got a reply (it may still lack some scores)."""
        return self.error is None


def read_records(path: str | Path) -> list[EvalRecord]:
    """Every record of a records file, in file order (a missing file has none).

    A line cut off mid-write (the run was killed) is skipped.

    Raises:
        ConfigurationError: a line other than the last is not a record.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(EvalRecord.model_validate_json(line))
        except ValidationError as exc:
            if _is_torn(line):  # cut off by a killed run; its question is redone
                continue
            raise ConfigurationError(f"{path}:{number + 1} is not an eval record: {exc}") from None
    return records


def _is_torn(line: str) -> bool:
    """A line cut off mid-write: not a complete JSON object."""
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return True
    return False


def latest_records(records: Iterable[EvalRecord]) -> dict[str, EvalRecord]:
    """The last record of each question id, in first-seen order."""
    latest: dict[str, EvalRecord] = {}
    for record in records:
        latest[record.id] = record
    return latest


def append_record(path: str | Path, record: EvalRecord) -> None:
    """Append one record as a JSON line and fsync it, so it survives a crash.

    A truncated last line left by a killed run is ended first, so the new
    record starts a line of its own (the truncated one is then skipped on read).
    """
    path = Path(path)
    line = record.model_dump_json() + "\n"
    if path.exists() and path.stat().st_size:
        with path.open("rb") as tail:
            tail.seek(-1, os.SEEK_END)
            if tail.read(1) != b"\n":
                line = "\n" + line
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def compact_records(path: str | Path) -> list[EvalRecord]:
    """Rewrite a records file with only the latest record of each question (atomically).

    Updates such as :func:`~uq_guard.evaluation.runner.add_verbalized` append
    a new record per question; this drops the superseded lines. The new file
    is written beside the old one and moved over it, so a crash leaves one or
    the other, never half of each.

    Returns:
        the records kept, in first-seen order.
    """
    path = Path(path)
    kept = list(latest_records(read_records(path)).values())
    write_records(path, kept)
    return kept


def write_records(path: str | Path, records: Iterable[EvalRecord]) -> Path:
    """Replace a records file with ``records`` (atomically: written beside it, then moved)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".writing")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.writelines(record.model_dump_json() + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def label_free_confidence(record: EvalRecord) -> float | None:
    """The record's label-free confidence (ALGORITHMS §2.9), calibrated or not.

    A calibrated run reports P(correct) as ``confidence`` and keeps the value
    it mapped in ``raw_confidence``; an uncalibrated run's ``confidence`` is
    the label-free one itself. Fitting a calibration reads this, so that a
    calibration is always fitted on the scale the guard calibrates.
    """
    return record.raw_confidence if record.calibrated else record.confidence
