"""Question rows from the Hugging Face ``datasets`` library: ``--data hf:NAME[:split]``.

Needs ``pip install 'uq-guard[datasets]'``. A path ``hf:NAME[:split]`` or
``hf:NAME:CONFIG:SPLIT`` (see :func:`~uq_guard.evaluation.questions.load_questions`)
names a data set on the Hub or a local folder: one written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a folder of data
files that ``datasets.load_dataset`` reads (JSON lines, CSV, Parquet; a
file's name gives its split). Rows are read like JSONL lines, so any data set
with a ``question`` field and one of the gold fields works; three are known
by name, which gives their configuration and default split:

* ``nq_open`` (NQ-Open): ``question``, ``answer``; split ``validation``;
* ``trivia_qa`` (TriviaQA, configuration ``rc.nocontext``): ``question``,
  ``answer.value`` with ``answer.aliases`` and ``answer.normalized_aliases``,
  id ``question_id``; split ``validation`` (``test`` has no answers);
* ``sciq`` (SciQ): ``question``, ``correct_answer``; split ``test``.

A row's id is its ``id`` field, else its ``question_id``, else its index in
the split. An unreachable Hub fails fast, naming the local alternatives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError, MissingDependencyError

__all__ = ["HF_PREFIX", "HUB_PROBE_TIMEOUT_S", "dataset_rows"]

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


def dataset_rows(
    spec: str, limit: int | None, *, gold_fields: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """The first ``limit`` rows of ``hf:NAME[:split]``, once it is known to hold questions.

    Args:
        spec: the ``--data`` value, ``hf:`` and all.
        limit: rows to read (None: all).
        gold_fields: the fields gold answers may come from; a data set needs
            ``question`` and at least one of them.

    Raises:
        ConfigurationError: the spec is malformed, the data set is missing or
            unreachable, the split is unknown or ambiguous, or a field is missing.
        MissingDependencyError: the ``datasets`` package is not installed.
    """
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
    if "question" not in columns or not any(field in columns for field in gold_fields):
        raise ConfigurationError(
            f"{spec} has the fields {', '.join(columns)}; uq_guard reads the question from "
            f"'question' and the gold answers from any of {', '.join(gold_fields)}. Map "
            f'your fields into a question file: python -c "import datasets; '
            f"{_loader_code(name, config, loaded, split)}.rename_columns({{"
            "'YOUR_QUESTION_FIELD': 'question', 'YOUR_ANSWER_FIELD': 'answer'}"
            ").to_json('questions.jsonl')\" then --data questions.jsonl"
        )
    return _rows(rows, limit)


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
