"""A verbalized confidence for stored records: one more model call for each answered question."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard._sync import run_sync
from uq_guard.backend import Backend
from uq_guard.evaluation.backends import conversation
from uq_guard.evaluation.records import (
    EvalRecord,
    append_record,
    compact_records,
    latest_records,
    read_records,
)
from uq_guard.scoring.verbalized import VERBALIZED_SCORE, read_verbalized, verbalized_request

__all__ = ["aadd_verbalized", "add_verbalized"]

logger = logging.getLogger(__name__)


async def aadd_verbalized(
    records_path: str | Path, backend: Backend, *, batch_size: int = 16
) -> list[EvalRecord]:
    """Ask the model how sure it is of each stored reply; record the answer (one call each).

    For runs made without ``verbalized_confidence=True``: the same request the
    guard would have sent (the record's system message if any, the question,
    the stored reply, then the verbalized prompt; see
    :mod:`uq_guard.scoring.verbalized`) for every
    answered record that has neither the score nor a note about it, in
    batches of ``batch_size``. Each updated record is appended (the latest
    record of a question wins), with ``scores["verbalized_confidence"]`` and
    one more model call, or a note quoting an answer that states no number.
    A failed call is not recorded, so the next run asks again. Interrupted,
    it resumes where it stopped; once done, the file is
    compacted (:func:`~uq_guard.evaluation.records.compact_records`).

    Returns:
        the latest record of every question in the file, in file order.

    Raises:
        ConfigurationError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    latest = latest_records(read_records(records_path))
    todo = [r for r in latest.values() if r.ok and not _has_verbalized(r)]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        requests = [verbalized_request(conversation(r.system, r.question), r.reply) for r in batch]
        answers = await backend.generate(requests)
        for record, answer in zip(batch, answers, strict=True):
            if not answer.ok:  # not recorded: the next call asks again
                logger.warning("question %s: verbalized call failed: %s", record.id, answer.error)
                continue
            confidence, note = read_verbalized(answer)
            update: dict[str, Any] = {"model_calls": record.model_calls + 1}
            if confidence is None:
                update["notes"] = [*record.notes, note]
            else:
                update["scores"] = {**record.scores, VERBALIZED_SCORE: confidence}
            updated = record.model_copy(update=update)
            append_record(records_path, updated)
            latest[record.id] = updated
    if todo:
        compact_records(records_path)
    return list(latest.values())


def add_verbalized(records_path: str | Path, backend: Backend, **kwargs: Any) -> list[EvalRecord]:
    """Sync twin of :func:`aadd_verbalized`."""
    return run_sync(aadd_verbalized(records_path, backend, **kwargs))


def _has_verbalized(record: EvalRecord) -> bool:
    # read_verbalized's note on an answer with no number marks a question already asked
    asked = any(note.startswith("verbalized confidence unreadable") for note in record.notes)
    return asked or VERBALIZED_SCORE in record.scores
