"""Evaluation questions in: question files, ``datasets`` data sets, and their gold answers.

A *question file* holds one JSON object a line with ``question``, its gold
answers, and optionally ``id``; the format of NQ-Open (``{"question": ...,
"answer": [...]}``). Without an ``id`` a question is known by its line
number, so a resumed run with a larger ``--limit`` still finds what it has
done. The gold answers are the union, in this order, of every field a data
set keeps them in (:data:`GOLD_FIELDS`):

* ``answer``: one answer, a list, or TriviaQA's ``{"value": ..., "aliases":
  [...], "normalized_aliases": [...]}``;
* ``answers``: SQuAD's ``{"text": [...], "answer_start": [...]}``, or a list
  (of strings, or of such objects);
* ``aliases``, ``answer_aliases``, ``normalized_aliases``: lists of other
  spellings;
* ``correct_answer``: SciQ's one answer.

Spellings that grade the same (equal after
:func:`~uq_guard.evaluation.correctness.normalize_answer`) are kept once, the
first one seen: a data set's lower-case ``normalized_aliases`` do not hide
the capitals of an acronym such as ``"DKK"``.

Questions can also come from the Hugging Face ``datasets`` library: a path
``hf:NAME[:split]`` or ``hf:NAME:CONFIG:SPLIT`` (see
:mod:`uq_guard.evaluation.hf_datasets`); its rows are read like JSONL lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from uq_guard._exceptions import ConfigurationError
from uq_guard.evaluation.correctness import normalize_answer
from uq_guard.evaluation.hf_datasets import HF_PREFIX, dataset_rows

__all__ = ["GOLD_FIELDS", "EvalItem", "gold_answers", "load_questions"]

#: The fields gold answers are read from, in order (see the module docstring).
GOLD_FIELDS = (
    "answer",
    "answers",
    "aliases",
    "answer_aliases",
    "normalized_aliases",
    "correct_answer",
)
# inside a nested answer object (TriviaQA's "answer", SQuAD's "answers")
_NESTED_GOLD_KEYS = ("value", "text", "aliases", "normalized_value", "normalized_aliases")


class EvalItem(BaseModel):
    """One question to evaluate.

    Attributes:
        id: stable name of the question (its ``id`` field, else its line number).
        question: the prompt sent to the model.
        gold: the accepted answers (any one suffices).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    gold: list[str]


def load_questions(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Read evaluation questions: a question file, or a ``datasets`` data set.

    Args:
        path: the JSONL file, or ``hf:NAME[:split]`` / ``hf:NAME:CONFIG:SPLIT``
            for a data set read with the ``datasets`` library (NAME on the
            Hub or a local folder; see the module docstring).
        limit: keep the first ``limit`` questions (None: all).

    Raises:
        ConfigurationError: the file or data set is missing or unreachable, or a
            line or row is not a question with gold answers.
        MissingDependencyError: ``hf:`` without the ``datasets`` package.
    """
    if isinstance(path, str) and path.startswith(HF_PREFIX):
        return _load_hf_questions(path, limit)
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"question file {path} does not exist")
    items: list[EvalItem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                gold = gold_answers(row)
                if not gold:
                    raise KeyError(f"no gold answer in any of {', '.join(GOLD_FIELDS)}")
                items.append(
                    EvalItem(
                        id=str(row.get("id", number)), question=str(row["question"]), gold=gold
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
                raise ConfigurationError(
                    f"{path}:{number + 1} is not a question with gold answers "
                    f'(expected {{"question": ..., "answer": [...]}}): {exc}'
                ) from None
    return items


def _load_hf_questions(spec: str, limit: int | None) -> list[EvalItem]:
    """The questions of ``hf:NAME[:split]`` (see :func:`load_questions`)."""
    items: list[EvalItem] = []
    for index, row in enumerate(dataset_rows(spec, limit, gold_fields=GOLD_FIELDS)):
        try:
            gold = gold_answers(row)
            if not gold:
                raise ValueError(f"no gold answer in any of {', '.join(GOLD_FIELDS)}")
            if not row["question"]:
                raise ValueError("its question is empty")
            row_id = row.get("id", row.get("question_id"))
            items.append(
                EvalItem(
                    id=str(index if row_id is None else row_id),
                    question=str(row["question"]),
                    gold=gold,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:  # ValidationError is a ValueError
            raise ConfigurationError(
                f"row {index} of {spec} is not a question with gold answers: {exc}"
            ) from None
    return items


def gold_answers(row: dict[str, Any]) -> list[str]:
    """Every gold answer of one question-file row, from all of :data:`GOLD_FIELDS`.

    Returns:
        the union in field order, each spelling kept once (the first of those
        equal after normalisation); empty when the row has none.

    Raises:
        TypeError: a row that is not a JSON object, or a gold field of another type.
    """
    if not isinstance(row, dict):
        raise TypeError(f"a question is a JSON object, got {type(row).__name__}")
    found: list[str] = []
    for name in GOLD_FIELDS:
        if name in row:
            _collect(row[name], found)
    kept: dict[str, str] = {}
    for answer in found:
        kept.setdefault(normalize_answer(answer) or answer, answer)
    return list(kept.values())


def _collect(value: Any, into: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        into.append(str(value))
    elif isinstance(value, list):
        for element in value:
            _collect(element, into)
    elif isinstance(value, dict):
        for key in _NESTED_GOLD_KEYS:
            _collect(value.get(key), into)
    else:
        raise TypeError(f"a gold answer must be text, a list or an object, got {value!r}")
