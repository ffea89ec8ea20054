"""The eval run itself: every question through a guard, each record written as it finishes.

Each question runs through :class:`~uq_guard.Guard` (policy ``annotate``,
samples kept in the report) and its :class:`~uq_guard.evaluation.records.EvalRecord`
is appended to ``records.jsonl`` and fsync'd as soon as it finishes. Started
again on the same folder, the run skips every question already recorded
without an error and makes no model call for them (the settings check is
:mod:`uq_guard.evaluation.resume`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError, UQGuardError
from uq_guard._sync import run_sync
from uq_guard.backend import Backend
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder
from uq_guard.engine import Guard
from uq_guard.evaluation.backends import ReplayBackend, ReplyCap, conversation
from uq_guard.evaluation.correctness import Correctness, Judge, assess_answer
from uq_guard.evaluation.records import (
    EvalItem,
    EvalRecord,
    append_record,
    latest_records,
    read_records,
)
from uq_guard.evaluation.resume import (
    RECORDS_FILE,
    SETTINGS_FILE,
    check_resume,
    eval_config,
    recorded_settings,
)

__all__ = ["EvalRun", "arun_eval", "run_eval"]

logger = logging.getLogger(__name__)

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
    settings = recorded_settings(
        config, model_name, system=system, reply_max_tokens=reply_max_tokens
    )
    check_resume(out / SETTINGS_FILE, settings)
    records_path = out / RECORDS_FILE
    done = {k: r for k, r in latest_records(read_records(records_path)).items() if r.ok}

    replay = ReplayBackend(backend, reuse) if reuse else None
    model: Backend = replay or backend
    if reply_max_tokens is not None:
        model = ReplyCap(model, reply_max_tokens)
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
        # the config's sections as they are, so a new sampling or scoring setting is recorded
        "sampling": {**config.sampling.model_dump(), "reply_max_tokens": reply_max_tokens},
        "scoring": _scoring_settings(config),
    }
    started = time.perf_counter()
    try:
        result = await guard.arun(list(conversation(system, item.question)))
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
    """The scoring section as a record keeps it (a similarity function as "custom")."""
    similarity = config.similarity if isinstance(config.similarity, str) else "custom"
    return {**config.scoring.model_dump(), "similarity": similarity}
