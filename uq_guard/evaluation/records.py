"""Evaluation questions in, per-question records out: the JSONL files of an eval run.

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

Spellings that grade the same (equal after
:func:`~uq_guard.evaluation.correctness.normalize_answer`) are kept once, the
first one seen: a data set's lower-case ``normalized_aliases`` do not hide
the capitals of an acronym such as ``"DKK"``.

* ``correct_answer``: SciQ's one answer.

Questions can also come from the Hugging Face ``datasets`` library
(``pip install 'uq-guard[datasets]'``): a path ``hf:NAME[:split]`` or
``hf:NAME:CONFIG:SPLIT`` (see :func:`load_questions`). NAME is a data set on
the Hub or a local folder: one written by ``Dataset.save_to_disk`` /
``DatasetDict.save_to_disk``, or a folder of data files that
``datasets.load_dataset`` reads (JSON lines, CSV, Parquet; a file's name
gives its split). Rows are read like JSONL lines, so any data set with a
``question`` field and one of the gold fields above works; three are known by
name, which gives their configuration and default split:

* ``nq_open`` (NQ-Open): ``question``, ``answer``; split ``validation``;
* ``trivia_qa`` (TriviaQA, configuration ``rc.nocontext``): ``question``,
  ``answer.value`` with ``answer.aliases`` and ``answer.normalized_aliases``,
  id ``question_id``; split ``validation`` (``test`` has no answers);
* ``sciq`` (SciQ): ``question``, ``correct_answer``; split ``test``.

A row's id is its ``id`` field, else its ``question_id``, else its index in
the split.

A *records file* holds one :class:`EvalRecord` a line, appended and fsync'd as
each question finishes, so an interrupted run loses at most the question in
flight. When a question appears more than once (a failed question retried on
resume), the last line wins.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard.evaluation.correctness import normalize_answer

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

#: What starts a ``--data`` value read through the ``datasets`` library.
HF_PREFIX = "hf:"
#: Seconds to wait for the Hugging Face Hub to answer before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _KnownDataset:
    config: str | None
    split: str


# by the last part of the Hub name, so "trivia_qa" and "mandarjoshi/trivia_qa" both match
_KNOWN_DATASETS = {
    "nq_open": _KnownDataset(config=None, split="validation"),
    "trivia_qa": _KnownDataset(config="rc.nocontext", split="validation"),
    "sciq": _KnownDataset(config=None, split="test"),
}


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
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError(f"--data {spec}", "datasets") from exc
    name, config, split = _parse_hf_spec(spec)
    known = _KNOWN_DATASETS.get(name.rstrip("/").rsplit("/", 1)[-1].lower())
    default_split = known.split if known else None
    local = Path(name).expanduser()
    if local.exists():
        loaded = _load_local(datasets, local, config, spec)
    else:
        if config is None and known is not None:
            config = known.config
        loaded = _load_from_hub(datasets, name, config, split or default_split, spec)
    rows, split = _pick_split(loaded, split, default_split, name, spec)
    columns = list(rows.column_names)
    if "question" not in columns or not any(field in columns for field in GOLD_FIELDS):
        raise ConfigurationError(
            f"{spec} has the fields {', '.join(columns)}; uq_guard reads the question from "
            f"'question' and the gold answers from any of {', '.join(GOLD_FIELDS)}. Map "
            f'your fields into a question file: python -c "import datasets; '
            f"{_loader_code(name, config, loaded, split)}.rename_columns({{"
            "'YOUR_QUESTION_FIELD': 'question', 'YOUR_ANSWER_FIELD': 'answer'}"
            ").to_json('questions.jsonl')\" then --data questions.jsonl"
        )
    items: list[EvalItem] = []
    for index, row in enumerate(_rows(rows, limit)):
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


def _loader_code(name: str, config: str | None, loaded: Any, split: str | None) -> str:
    """Python that loads the same rows, for an error message to show."""
    split = split or "SPLIT"
    folder = Path(name).expanduser()
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        picked = f"['{split}']" if hasattr(loaded, "keys") else ""
        return f"datasets.load_from_disk('{name}'){picked}"
    configured = f", '{config}'" if config else ""
    return f"datasets.load_dataset('{name}'{configured}, split='{split}')"


def _parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[:split]`` or ``hf:NAME:CONFIG:SPLIT`` -> (name, config, split)."""
    rest = spec[len(HF_PREFIX) :]
    if rest and Path(rest).expanduser().exists():  # a local folder, colons and all
        return rest, None, None
    parts = rest.split(":")
    if not parts[0] or len(parts) > 3 or any(not part for part in parts[1:]):
        raise ConfigurationError(
            f"--data {spec!r}: expected hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT "
            "(e.g. hf:nq_open:validation, hf:trivia_qa:rc.nocontext:validation)"
        )
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return parts[0], None, parts[1] if len(parts) == 2 else None


def _load_local(datasets: Any, folder: Path, config: str | None, spec: str) -> Any:
    """A data set saved with ``save_to_disk``, or a folder of data files."""
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(folder))
    if not folder.is_dir():
        raise ConfigurationError(
            f"{spec}: {folder} is a file; hf: reads a data set folder. For a JSONL "
            f"question file, use --data {folder}"
        )
    from datasets.exceptions import DatasetsError

    try:
        return datasets.load_dataset(str(folder), config)
    except (ValueError, FileNotFoundError, DatasetsError) as exc:
        # e.g. files whose fields differ: datasets wants one schema for all splits
        cause = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        raise ConfigurationError(f"{spec}: datasets cannot read {folder}: {cause}") from None


def _load_from_hub(
    datasets: Any, name: str, config: str | None, split: str | None, spec: str
) -> Any:
    """``load_dataset`` from the Hub, failing fast with the local alternative when offline."""
    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    if not offline:
        # datasets retries an unreachable Hub with backoff for ~25 s before it gives up
        # (longer when packets are dropped rather than refused): ask once, briefly
        problem = _hub_unreachable(HUB_PROBE_TIMEOUT_S)
        if problem is not None:
            raise ConfigurationError(_unreachable_message(spec, problem))
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset(name, config, split=split)
    except DatasetNotFoundError as exc:
        raise ConfigurationError(
            f"{spec}: no data set {name!r} on the Hugging Face Hub (or it is gated: log in "
            f"with `hf auth login`): {exc}. A local copy works too: --data hf:path/to/folder "
            "or --data path/to/file.jsonl"
        ) from None
    except ConnectionError as exc:  # offline mode with nothing cached, or the Hub went away
        raise ConfigurationError(_unreachable_message(spec, str(exc), offline=offline)) from None
    except ValueError as exc:  # an unknown configuration or split
        raise ConfigurationError(f"{spec}: {exc}") from None


def _hub_unreachable(timeout_s: float) -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None when it answers.

    One HEAD request to the Hub's endpoint (``HF_ENDPOINT``) through
    ``huggingface_hub``'s own session, so proxies are honoured; any HTTP answer
    counts as reachable. A thread bounds the wait, name resolution included.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout_s)
            outcome.append(None)
        except Exception as exc:  # any failure to get an answer means unreachable
            outcome.append(f"{endpoint}: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="uq_guard-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    if not outcome:
        return f"{endpoint} did not answer within {timeout_s:g} s"
    return outcome[0]


def _unreachable_message(spec: str, problem: str, *, offline: bool = False) -> str:
    why = (
        "HF_HUB_OFFLINE is set and the data set is not in the local cache"
        if offline
        else f"the Hugging Face Hub is not reachable ({problem})"
    )
    return (
        f"cannot load {spec}: {why}. Use a local copy instead: --data path/to/file.jsonl "
        '(one {"question": ..., "answer": [...]} a line), or --data hf:path/to/folder for '
        "a data set saved with save_to_disk on a machine that can reach the Hub"
    )


def _pick_split(
    loaded: Any, split: str | None, default: str | None, name: str, spec: str
) -> tuple[Any, str | None]:
    """One split of a loaded data set, and its name (None when it has none).

    The split asked for; else the known data set's default split when it has
    one; else its only split. A saved ``Dataset`` (not a ``DatasetDict``) and
    what ``load_dataset(..., split=...)`` returns are one split already.
    """
    if not hasattr(loaded, "keys"):
        return loaded, split
    splits = list(loaded.keys())
    if split is None:
        if default in splits:
            return loaded[default], default
        if len(splits) == 1:
            return loaded[splits[0]], splits[0]
    elif split in splits:
        return loaded[split], split
    asked = f"no split {split!r}" if split else "several splits"
    raise ConfigurationError(
        f"{spec}: {asked}; its splits are {', '.join(splits)} (pick one: hf:{name}:SPLIT)"
    )


def _rows(rows: Any, limit: int | None) -> Iterator[dict[str, Any]]:
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    yield from rows


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
