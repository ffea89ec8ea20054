"""Run a guarded model over labelled questions, record everything, resume, re-score.

::

    from uq_guard.evaluation.runner import load_questions, make_backend, run_eval, rescore

    items = load_questions("nq_open_dev.jsonl", limit=100)
    backend = make_backend("local", max_tokens=24)           # or "openai:http://host/v1#model"
    run = run_eval(items, backend, GuardConfig(n_perturbations=4, n_samples=3), out_dir="out")
    run.records        # one EvalRecord a question, also in out/records.jsonl
    rescored = rescore(run.records, similarity="abs_cosine")   # no model call

Each question runs through :class:`~uq_guard.Guard` (policy ``annotate``,
samples kept in the report) and its :class:`EvalRecord` is appended to
``records.jsonl`` and fsync'd as soon as it finishes. Started again on the same
folder, the run skips every question already recorded without an error and
makes no model call for them; ``run.json`` holds the settings, and a resume
with other settings is refused rather than mixing two configurations.

An optional ``system`` message (e.g. "Answer in a few words.") is sent with
every question as the product would send it: the guard perturbs only the
last user message, so the system message travels with every perturbation
and every sample. The reply is generated at the product's length
(``reply_max_tokens``) while the samples may stay shorter
(``GuardConfig.max_tokens``): a reply cut at the sample length is graded
wrong for never reaching its answer. Both caps, and the system message, are
recorded in ``run.json``.

Questions run concurrently up to ``concurrency`` (useful for API backends;
a local model batches each question's prompts already, so 1 suits it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError, MissingDependencyError, UQGuardError
from uq_guard._guard import _defined_in
from uq_guard._messages import last_user_index, user_prompt
from uq_guard._sync import run_sync
from uq_guard.backend import Backend, Generation, GenerationRequest, Message, Usage, is_backend
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder, shared_embedder
from uq_guard.engine import Guard
from uq_guard.evaluation.correctness import Correctness, Judge, assess_answer
from uq_guard.evaluation.records import (
    EvalItem,
    EvalRecord,
    append_record,
    compact_records,
    latest_records,
    load_questions,
    read_records,
)
from uq_guard.scoring.suite import score_samples
from uq_guard.scoring.verbalized import VERBALIZED_SCORE, read_verbalized, verbalized_request

__all__ = [
    "EvalRun",
    "ReplayBackend",
    "aadd_verbalized",
    "add_verbalized",
    "arun_eval",
    "load_questions",
    "make_backend",
    "rescore",
    "run_eval",
    "run_settings",
    "run_temperatures",
    "temperature_folder",
]

logger = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
SETTINGS_FILE = "run.json"
# settings that cannot change what a record holds: they may differ on resume; every other
# GuardConfig field is recorded in run.json and must match (a new field is guarded by default)
_RUN_ONLY_SETTINGS = frozenset(
    {
        "max_concurrency",
        "timeout_s",
        "max_retries",
        "retry_wait_s",
        "strict",
        "include_samples",
        "policy",
        "threshold",
        "abstain_message",
    }
)

_SAMPLING_STATS = (
    "n_samples",
    "n_failed",
    "n_samples_requested",
    "n_samples_budget",
    "sampling_rounds",
    "adaptive",
    "adaptive_stopped_early",
)


@dataclass
class EvalRun:
    """What an eval run produced.

    Attributes:
        records: the latest record of every question asked for, in question order.
        records_path: the JSONL file they are in.
        n_new / n_resumed: questions run now / found already recorded.
        n_failed: questions with no reply (recorded with ``error``).
    """

    records: list[EvalRecord]
    records_path: Path
    n_new: int = 0
    n_resumed: int = 0
    n_failed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------


def make_backend(
    spec: Any,
    *,
    max_tokens: int | None = None,
    seed: int | None = None,
    max_concurrency: int = 8,
    timeout_s: float | None = 120.0,
) -> Backend:
    """Turn a model description into a :class:`~uq_guard.backend.Backend`.

    Args:
        spec: ``"local"`` (SmolLM2-135M-Instruct through ``uq_guard_hf``),
            ``"openai:URL"`` or ``"openai:URL#model"`` (an OpenAI-compatible
            server; the key comes from ``OPENAI_API_KEY``, default ``"none"``),
            ``"py:module:attr"`` (an object or a no-argument factory: a
            Backend or a LangChain chat model), or the object itself (a
            Backend or a LangChain chat model).
        max_tokens: cap on the reply's tokens, the product's reply length (the
            samples' cap is ``GuardConfig.max_tokens``); None: the backend's own.
        seed: sampling seed of the local model.
        max_concurrency / timeout_s: for API and LangChain backends.

    Raises:
        ConfigurationError: an unknown spec, or an object that is no model.
        MissingDependencyError: the integration's extra is not installed.
    """
    if isinstance(spec, str):
        if spec == "local":
            try:
                from uq_guard_hf import HuggingFaceChatModel
            except ImportError as exc:
                raise MissingDependencyError("the local model", "local") from exc
            kwargs: dict[str, Any] = {"seed": seed}
            if max_tokens is not None:
                kwargs["max_new_tokens"] = max_tokens
            return HuggingFaceChatModel.default(**kwargs)
        if spec.startswith("openai:"):
            return _openai_backend(
                spec.removeprefix("openai:"),
                max_tokens=max_tokens,
                max_concurrency=max_concurrency,
                timeout_s=timeout_s,
            )
        if spec.startswith("py:"):
            module_name, _, attr = spec.removeprefix("py:").rpartition(":")
            if not module_name:
                raise ConfigurationError(f"model spec {spec!r}: expected py:module:attr")
            target = getattr(importlib.import_module(module_name), attr)
            obj = target() if callable(target) and not _is_model(target) else target
            return make_backend(obj, max_concurrency=max_concurrency, timeout_s=timeout_s)
        raise ConfigurationError(
            f"unknown model {spec!r}; use 'local', 'openai:URL[#model]' or 'py:module:attr'"
        )
    if is_backend(spec):
        return spec
    if _defined_in(spec, "langchain_core", "langchain", "langchain_community"):
        try:
            from uq_guard_langchain.backend import LangChainBackend
        except ImportError as exc:
            raise MissingDependencyError("evaluating a LangChain model", "langchain") from exc

        return LangChainBackend(spec, max_concurrency=max_concurrency, timeout_s=timeout_s)
    raise ConfigurationError(
        f"cannot evaluate a {type(spec).__name__}: pass a Backend, a LangChain chat model, "
        "'local' or 'openai:URL[#model]'"
    )


def _is_model(obj: Any) -> bool:
    return is_backend(obj) or hasattr(obj, "ainvoke")


def _openai_backend(
    target: str, *, max_tokens: int | None, max_concurrency: int, timeout_s: float | None
) -> Backend:
    try:
        from uq_guard_openai.backend import backend_for_url
    except ImportError as exc:
        raise MissingDependencyError("an OpenAI-compatible model", "openai") from exc

    url, _, model = target.partition("#")
    if not url:
        raise ConfigurationError("openai model spec needs a URL: openai:http://host:port/v1#model")
    return backend_for_url(
        url, model, max_tokens=max_tokens, max_concurrency=max_concurrency, timeout_s=timeout_s
    )


class ReplayBackend:
    """Answers the reply and the x_0 samples from earlier records; the rest goes to ``backend``.

    Used to compare configurations on the same questions at a lower cost: the
    greedy reply and the samples of the unperturbed question do not depend on
    the perturbation, so a second run can take them from the first one's
    records (same system message and reply cap; for samples, same
    temperature, max_tokens, and at least as many). Only first-round requests
    are replayed: a later round of adaptive sampling (``seed_offset > 0``)
    always goes to ``backend``.

    Attributes:
        replayed: requests served from the records, by question.
    """

    def __init__(self, backend: Backend, records: Mapping[str, EvalRecord]) -> None:
        self.backend = backend
        self._by_question = {r.question: r for r in records.values() if r.ok and r.prompts}
        self.replayed: dict[str, int] = {}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        answers: list[Generation | None] = [self._replay(r) for r in requests]
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            fresh = await self.backend.generate([requests[i] for i in missing])
            for i, generation in zip(missing, fresh, strict=False):
                answers[i] = generation
        return [
            a if a is not None else Generation(error=RuntimeError("no answer")) for a in answers
        ]

    def _replay(self, request: GenerationRequest) -> Generation | None:
        # a later adaptive round (seed_offset > 0) must draw new answers, not the stored ones
        if request.seed_offset:
            return None
        question = user_prompt(request.messages)
        system = _system_of(request.messages)
        if tuple(request.messages) != _conversation(system, question):
            return None  # a longer conversation (e.g. the verbalized question) is not stored
        record = self._by_question.get(question)
        if record is None or record.prompts[0] != question or record.system != system:
            return None
        if request.temperature is None:
            if request.max_tokens != record.sampling.get("reply_max_tokens"):
                return None  # a reply cut at another length
            generation = Generation(
                texts=[record.reply],
                token_logprobs=[record.reply_token_logprobs]
                if record.reply_token_logprobs
                else None,
                token_entropies=(
                    [record.reply_token_entropies] if record.reply_token_entropies else None
                ),
                usage=Usage(),
            )
        else:
            stored = record.samples[0] if record.samples else []
            if (
                request.temperature != record.sampling.get("temperature")
                or request.max_tokens != record.sampling.get("max_tokens")
                or request.n > len(stored)
            ):
                return None
            generation = Generation(texts=list(stored[: request.n]), usage=Usage())
        self.replayed[question] = self.replayed.get(question, 0) + 1
        return generation


class _ReplyCap:
    """Gives every request without a token cap of its own (the reply) ``max_tokens``."""

    def __init__(self, backend: Backend, max_tokens: int) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        capped = [
            r if r.max_tokens is not None else dataclasses.replace(r, max_tokens=self.max_tokens)
            for r in requests
        ]
        return await self.backend.generate(capped)


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def eval_config(config: GuardConfig | None = None, **overrides: Any) -> GuardConfig:
    """The guard settings of an eval run: ``config`` with samples kept and policy ``annotate``."""
    return GuardConfig.build(config, **overrides, include_samples=True, policy="annotate")


def _settings(
    config: GuardConfig, model: str, *, system: str | None, reply_max_tokens: int | None
) -> dict[str, Any]:
    dumped = config.model_dump()
    if isinstance(config.calibration, (str, Path)):
        # the file, not where this checkout keeps it: a clone elsewhere resumes the run
        dumped["calibration"] = Path(config.calibration).name
    settings = {
        key: (value if isinstance(value, (str, int, float, bool, type(None))) else repr(value))
        for key, value in dumped.items()
        if key not in _RUN_ONLY_SETTINGS
    }
    return {"model": model, "system": system, "reply_max_tokens": reply_max_tokens, **settings}


def run_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's ``run.json`` settings, with what an older file meant by a missing key.

    Runs made before these settings were recorded sent no system message,
    capped the reply and the samples alike, and perturbed with the published
    GAAP (any sense, no neutral frames).
    """
    return {
        "system": None,
        "reply_max_tokens": saved.get("max_tokens"),
        "gaap_edits": "paper",
        "gaap_frames": False,
        **saved,
    }


def _check_resume(path: Path, settings: dict[str, Any]) -> None:
    if path.exists():
        before = run_settings(json.loads(path.read_text(encoding="utf-8")))
        if settings.get("reply_max_tokens") is None:  # not stated: the backend's own, unknown
            settings["reply_max_tokens"] = before["reply_max_tokens"]
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k, v) != v}
        if changed:
            what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigurationError(
                f"{path.parent} holds records made with other settings ({what}); use another "
                "output folder, or rescore() the records for other scoring settings"
            )
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


async def arun_eval(
    items: Sequence[EvalItem],
    backend: Backend,
    config: GuardConfig | None = None,
    *,
    out_dir: str | Path,
    model_name: str = "custom",
    embedder: Embedder | None = None,
    judge: Judge | None = None,
    concurrency: int = 1,
    reuse: Mapping[str, EvalRecord] | None = None,
    on_record: Callable[[EvalRecord], None] | None = None,
    system: str | None = None,
    reply_max_tokens: int | None = None,
) -> EvalRun:
    """Evaluate ``items`` with a guarded ``backend``; resume what ``out_dir`` already holds.

    Args:
        items: the questions (:func:`load_questions`).
        backend: the model (:func:`make_backend`).
        config: guard settings (made eval-ready by :func:`eval_config`).
        out_dir: where ``records.jsonl`` and ``run.json`` go (created).
        model_name: recorded in ``run.json``.
        embedder: defaults to the guard's shared embedder.
        judge: optional correctness judge (see :func:`assess_answer`).
        concurrency: questions in flight at once.
        reuse: earlier records by id whose reply and x_0 samples may be reused
            (see :class:`ReplayBackend`).
        on_record: called with each new record as it is written (a progress bar).
        system: a system message sent before every question (e.g. "Answer in a
            few words."); None: the question alone.
        reply_max_tokens: cap on the reply's tokens, the product's reply length
            (every request without a cap of its own gets it; the samples keep
            ``config.max_tokens``); None: the backend's own, not recorded.

    Raises:
        ConfigurationError: ``out_dir`` holds records made with other settings
            (a different system message or reply cap included), an empty ``system``,
            or a ``reply_max_tokens`` below 1.
    """
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    if reply_max_tokens is not None and reply_max_tokens < 1:
        raise ConfigurationError(f"reply_max_tokens must be >= 1, got {reply_max_tokens}")
    if system is not None and not system.strip():
        raise ConfigurationError("system must be a non-empty message, or None for none")
    config = eval_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(config, model_name, system=system, reply_max_tokens=reply_max_tokens)
    _check_resume(out / SETTINGS_FILE, settings)
    records_path = out / RECORDS_FILE
    done = {k: r for k, r in latest_records(read_records(records_path)).items() if r.ok}

    replay = ReplayBackend(backend, reuse) if reuse else None
    model: Backend = replay or backend
    if reply_max_tokens is not None:
        model = _ReplyCap(model, reply_max_tokens)
    guard = Guard(model, config, embedder=embedder)
    pending = [item for item in items if item.id not in done]
    slots = asyncio.Semaphore(concurrency)
    fresh: dict[str, EvalRecord] = {}

    async def one(item: EvalItem) -> None:
        async with slots:
            record = await _evaluate_one(
                guard, item, config, judge, replay, system, reply_max_tokens
            )
        append_record(records_path, record)
        fresh[item.id] = record
        if on_record is not None:
            on_record(record)

    await asyncio.gather(*(one(item) for item in pending))
    records = [fresh.get(item.id) or done[item.id] for item in items]
    return EvalRun(
        records=records,
        records_path=records_path,
        n_new=len(pending),
        n_resumed=len(items) - len(pending),
        n_failed=sum(1 for r in fresh.values() if not r.ok),
        settings=settings,
    )


def run_eval(*args: Any, **kwargs: Any) -> EvalRun:
    """Sync twin of :func:`arun_eval` (safe inside a running event loop)."""
    return run_sync(arun_eval(*args, **kwargs))


def run_temperatures(
    items: Sequence[EvalItem],
    backend: Backend,
    config: GuardConfig | None,
    temperatures: Sequence[float],
    *,
    out_dir: str | Path,
    folders: Mapping[float, str | Path] | None = None,
    **kwargs: Any,
) -> dict[float, EvalRun]:
    """One eval run per sampling temperature: the input of TSU (``report.tsu_by_method``).

    Runs ``config``'s own temperature first (when it is in the grid) and
    reuses its greedy replies at every other temperature, so the reply, which
    no temperature changes, is asked once; samples are drawn anew at each.

    Args:
        items / backend / config: as for :func:`run_eval`.
        temperatures: the grid (e.g. 0.3, 0.7, 1.0, 1.4).
        out_dir: each temperature's records go to ``out_dir/T<t>`` (e.g. ``T0.3``) ...
        folders: ... unless given here (e.g. an earlier run at one of them, resumed).
        kwargs: passed on to :func:`run_eval` (``model_name``, ``concurrency``, ...).

    Returns:
        the runs by temperature, in the order they ran.
    """
    config = config or GuardConfig()
    if len(set(temperatures)) < 2:
        raise ConfigurationError(f"a temperature grid needs two temperatures, got {temperatures}")
    runs: dict[float, EvalRun] = {}
    replies = None
    for temperature in sorted(set(temperatures), key=lambda t: (t != config.temperature, t)):
        folder = (folders or {}).get(temperature) or temperature_folder(out_dir, temperature)
        run = run_eval(
            items,
            backend,
            GuardConfig.build(config, temperature=temperature),
            out_dir=folder,
            reuse=replies,
            **kwargs,
        )
        runs[temperature] = run
        replies = replies or {r.id: r for r in run.records if r.ok}
    return runs


def temperature_folder(out_dir: str | Path, temperature: float) -> Path:
    """Where :func:`run_temperatures` keeps one temperature's run: ``out_dir/T<t>`` (``T0.3``)."""
    return Path(out_dir) / f"T{temperature:g}"


def _conversation(system: str | None, question: str) -> tuple[Message, ...]:
    """What the model is sent for a question: the system message, if any, then the question."""
    user: Message = {"role": "user", "content": question}
    return (user,) if system is None else ({"role": "system", "content": system}, user)


def _system_of(messages: Sequence[Message]) -> str | None:
    """The system message before the last user message, when it is the only message before it."""
    before = messages[: last_user_index(messages)]
    if len(before) == 1 and before[0].get("role") == "system":
        content = before[0].get("content")
        return content if isinstance(content, str) else None
    return None


async def _evaluate_one(
    guard: Guard,
    item: EvalItem,
    config: GuardConfig,
    judge: Judge | None,
    replay: ReplayBackend | None,
    system: str | None = None,
    reply_max_tokens: int | None = None,
) -> EvalRecord:
    base = {
        "id": item.id,
        "question": item.question,
        "gold": item.gold,
        "system": system,
        "sampling": {
            "temperature": config.temperature,
            "n_samples": config.n_samples,
            "max_tokens": config.max_tokens,
            "reply_max_tokens": reply_max_tokens,
        },
        "scoring": _scoring_settings(config),
    }
    started = time.perf_counter()
    try:
        result = await guard.arun(list(_conversation(system, item.question)))
    except UQGuardError as exc:
        logger.warning("question %s failed: %s", item.id, exc)
        return EvalRecord(**base, error=str(exc), seconds=time.perf_counter() - started)
    report, reply = result.report, result.reply
    reply_text = reply.texts[0]
    try:
        verdict = await _assess(reply_text, item, judge)
    except Exception as exc:  # a judge is user code or another model: record, do not stop the run
        logger.warning("question %s: the judge failed: %s", item.id, exc)
        return EvalRecord(
            **base, error=f"the judge failed: {exc}", seconds=time.perf_counter() - started
        )
    seconds = time.perf_counter() - started
    return EvalRecord(
        **base,
        reply=reply_text,
        reply_token_logprobs=reply.token_logprobs[0] if reply.token_logprobs else None,
        reply_token_entropies=reply.token_entropies[0] if reply.token_entropies else None,
        prompts=[item.question, *report.perturbations],
        samples=report.samples or [],
        perturbation_method=report.perturbation_method,
        perturbation_lexicon=report.perturbation_lexicon,
        n_perturbations_real=report.n_perturbations_real,
        scores=dict(report.scores),
        confidence=report.confidence if report.method != "unavailable" else None,
        method=report.method,
        calibrated=report.calibrated,
        raw_confidence=report.raw_confidence,
        correct=verdict.correct,
        correctness_rule=verdict.rule,
        matched_gold=verdict.matched,
        sampling_stats={k: getattr(report, k) for k in _SAMPLING_STATS if hasattr(report, k)},
        model_calls=report.cost.model_calls,
        prompt_tokens=report.cost.prompt_tokens,
        completion_tokens=report.cost.completion_tokens,
        reused_requests=replay.replayed.get(item.question, 0) if replay else 0,
        seconds=round(seconds, 4),
        timings_ms=dict(report.timings_ms),
        notes=list(report.degraded_reasons),
    )


async def _assess(reply: str, item: EvalItem, judge: Judge | None) -> Correctness:
    """The rules first; a judge only when none matched, awaited when it has ``ajudge``.

    A judge with an async ``ajudge`` (such as :class:`~uq_guard.evaluation.judge.ModelJudge`)
    runs on the runner's own event loop; a plain callable is called.
    """
    verdict = assess_answer(reply, item.gold, question=item.question)
    if verdict.rule != "none" or judge is None:
        return verdict
    ajudge = getattr(judge, "ajudge", None)
    if ajudge is None:
        return assess_answer(reply, item.gold, question=item.question, judge=judge)
    return Correctness(bool(await ajudge(item.question, reply, item.gold)), "judge")


def _scoring_settings(config: GuardConfig) -> dict[str, Any]:
    similarity = config.similarity if isinstance(config.similarity, str) else "custom"
    return {
        "similarity": similarity,
        "n_bootstrap": config.n_bootstrap,
        "seed": config.seed,
        "cluster_threshold": config.cluster_threshold,
        "embedding_model": config.embedding_model,
    }


# ---------------------------------------------------------------------------
# A verbalized confidence for stored records
# ---------------------------------------------------------------------------


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
        requests = [verbalized_request(_conversation(r.system, r.question), r.reply) for r in batch]
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


# ---------------------------------------------------------------------------
# Re-scoring
# ---------------------------------------------------------------------------


def rescore(
    records: Sequence[EvalRecord],
    *,
    embedder: Embedder | None = None,
    similarity: Any = None,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    cluster_threshold: float | None = None,
) -> list[EvalRecord]:
    """Recompute every score of ``records`` from their stored texts; no model is called.

    Settings left as None keep each record's own (``record.scoring``), so
    ``rescore(records)`` reproduces the stored scores. Scores that cannot be
    recomputed from texts (e.g. a verbalized confidence from an extra call)
    are kept as they were. Failed records are returned unchanged.

    Args:
        records: records of an eval run.
        embedder: defaults to the shared embedder of the records' embedding model.
        similarity / n_bootstrap / seed / cluster_threshold: scoring settings
            (see :class:`~uq_guard.GuardConfig`).

    Returns:
        new records with ``scores``, ``confidence``, ``method`` and ``scoring`` replaced.
    """
    rescored = []
    for record in records:
        if not record.ok or not record.prompts:
            rescored.append(record)
            continue
        stored = record.scoring
        settings = {
            "similarity": similarity if similarity is not None else stored.get("similarity"),
            "n_bootstrap": n_bootstrap if n_bootstrap is not None else stored.get("n_bootstrap"),
            "seed": seed if seed is not None else stored.get("seed", 0),
            "cluster_threshold": cluster_threshold
            if cluster_threshold is not None
            else stored.get("cluster_threshold"),
        }
        settings = {
            k: v
            for k, v in settings.items()
            if v is not None and not (k == "similarity" and v == "custom")
        }
        scored = score_samples(
            embedder=embedder or shared_embedder(stored.get("embedding_model")),
            prompts=record.prompts,
            answers=record.samples,
            reply=record.reply,
            reply_logprobs=record.reply_token_logprobs,
            reply_entropies=record.reply_token_entropies,
            **settings,
        )
        named = settings.get("similarity")
        rescored.append(
            record.model_copy(
                update={
                    "scores": {**record.scores, **scored.scores},
                    "confidence": scored.confidence,
                    "method": scored.method,
                    "scoring": {
                        **stored,
                        **settings,
                        "similarity": named if isinstance(named, str) else "custom",
                    },
                }
            )
        )
    return rescored
