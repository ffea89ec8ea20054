"""Assessing one model's reply: sample -> score -> calibrate, for :class:`~uq_guard.Guard`.

The reply and every sample go to the :class:`~uq_guard.backend.Backend` in
one batched round. A backend that answers each request on its own (an API:
``independent_requests = True``, see :func:`~uq_guard.backend.answers_independently`)
gets the reply and the original prompt's samples while the perturbed prompts
are still being made, and their samples as soon as they exist: the
perturbation's CPU time hides behind the model's latency instead of adding
to it. Failed samples are retried when retryable, then left out
and reported; only a failed *reply* raises (:class:`GenerationError`). A
failing scoring step (the embedder, a user similarity) never loses the reply
either: the call has no estimate and the report says why.

With ``adaptive=True`` the samples come in two rounds under the same cap:
round 1 is the reply and ``adaptive_first_samples`` answers for every prompt;
when they already agree (or, with ``adaptive_margin``, their confidence is far
from the threshold) round 2 is skipped, otherwise it draws the rest and
everything is scored together (the rule is spelled out in
:class:`~uq_guard.config.GuardConfig`). A round 1 that lost samples never
stops early. With ``verbalized_confidence=True`` the question "how sure are
you?" needs the reply, so it rides along with round 2, or runs as a round of
its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from uq_guard._exceptions import ConfigurationError, GenerationError
from uq_guard._messages import with_user_prompt
from uq_guard.backend import (
    Backend,
    Generation,
    GenerationRequest,
    Message,
    Usage,
    answers_independently,
)
from uq_guard.calibration import CalibratedConfidence, Calibrator
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder
from uq_guard.perturb import PerturbationResult
from uq_guard.scoring.suite import SampleScores, score_samples
from uq_guard.scoring.verbalized import VERBALIZED_SCORE, read_verbalized, verbalized_request
from uq_guard.tracing import SCORE_SPAN, GuardTracing

logger = logging.getLogger(__name__)


@dataclass
class Assessment:
    """What sampling and scoring found about one model's reply."""

    reply: Generation
    scored: SampleScores
    answers: list[list[str]]
    n_failed: int
    usage: Usage
    timings_ms: dict[str, float]
    degraded_reasons: list[str]  # what lost information (strict mode raises on these)
    notes: list[str] = field(default_factory=list)  # information only
    raw_confidence: float | None = None  # set when a calibrator replaced scored.confidence
    n_requested: int = 0
    n_budget: int = 0
    rounds: int = 1
    adaptive: bool = False
    stopped_early: bool = False
    stop_reason: str | None = None
    perturbation: PerturbationResult | None = None  # the prompts x_1..x_m the samples answered


@dataclass
class _Samples:
    """The sampled answers of one call so far, over its rounds."""

    answers: list[list[str]]
    usage: Usage
    errors: set[str] = field(default_factory=set)
    n_requested: int = 0
    rounds: int = 0

    @property
    def n_failed(self) -> int:
        return self.n_requested - sum(len(a) for a in self.answers)

    def add(self, generations: Sequence[Generation], n: int) -> None:
        for answers, generation in zip(self.answers, generations, strict=True):
            answers.extend(generation.texts[:n])
            self.usage = self.usage + generation.usage
            if generation.error is not None:
                self.errors.add(str(generation.error))
        self.n_requested += n * len(generations)
        self.rounds += 1


class Assessor:
    """Samples, scores and calibrates replies under one guard's settings.

    Args:
        config: the guard's settings.
        tracing: the guard's spans.
        retrying: wraps a backend in the guard's retries and concurrency cap.
        embedder: returns the guard's embedder (loaded on first use).
        calibrator: the guard's calibrator, or None.
    """

    def __init__(
        self,
        config: GuardConfig,
        tracing: GuardTracing,
        retrying: Callable[[Backend], Backend],
        embedder: Callable[[], Embedder],
        calibrator: Calibrator | None,
    ) -> None:
        self.config = config
        self.tracing = tracing
        self.retrying = retrying
        self.embedder = embedder
        self.calibrator = calibrator

    async def assess(
        self,
        backend: Backend,
        conversation: tuple[Message, ...],
        prompt: str,
        perturbation: PerturbationResult | Awaitable[PerturbationResult],
        *,
        calibrate: bool = False,
    ) -> Assessment:
        """Answer ``conversation`` with ``backend``, sample every prompt, and score the reply.

        ``perturbation`` may still be in the making (an awaitable): a backend
        that answers requests independently is then asked for the reply and
        the original prompt's samples meanwhile; any other waits for it and
        gets one batch.

        Raises:
            GenerationError: the reply itself could not be generated.
        """
        cfg = self.config
        retrying = self.tracing.backend(self.retrying(backend))
        first = cfg.adaptive_first_samples if cfg.adaptive else cfg.n_samples
        reply_request = GenerationRequest(messages=conversation, want_logprobs=True)
        timings = {"generate": 0.0, "score": 0.0}

        if not isinstance(perturbation, PerturbationResult) and answers_independently(backend):
            t = time.perf_counter()
            perturbation, (reply, *round_one) = await self._overlapped_round(
                retrying, conversation, prompt, perturbation, reply_request, first
            )
            prompts = [prompt, *perturbation.prompts]
        else:
            if not isinstance(perturbation, PerturbationResult):
                perturbation = await perturbation
            t = time.perf_counter()
            prompts = [prompt, *perturbation.prompts]
            reply, *round_one = await retrying.generate(
                [reply_request, *self._sample_requests(conversation, prompts, first, round_index=0)]
            )
        timings["generate"] += ms_since(t)
        if not reply.ok:
            raise GenerationError(
                f"the model's reply failed: {reply.error or 'empty response'}", cause=reply.error
            )
        samples = _Samples(answers=[[] for _ in prompts], usage=reply.usage)
        samples.add(round_one, first)
        scored = await self._score(prompts, samples.answers, reply, timings)

        pending = (
            [verbalized_request(conversation, reply.texts[0])] if cfg.verbalized_confidence else []
        )
        stopped_early, stop_reason = False, None
        if cfg.adaptive:
            stopped_early, stop_reason = self._settled(scored, samples, calibrate)
            logger.debug("adaptive sampling: %s", stop_reason)
        verbalized: Generation | None = None
        if cfg.adaptive and not stopped_early:
            rest = cfg.n_samples - first
            t = time.perf_counter()
            generations = await retrying.generate(
                [*self._sample_requests(conversation, prompts, rest, round_index=1), *pending]
            )
            timings["generate"] += ms_since(t)
            if pending:  # the confidence question rode along with round 2
                verbalized, pending = generations.pop(), []
            samples.add(generations, rest)
            scored = await self._score(prompts, samples.answers, reply, timings)
        if pending:
            t = time.perf_counter()
            [verbalized] = await retrying.generate(pending)
            timings["generate"] += ms_since(t)

        degraded: list[str] = []
        if samples.n_failed:
            degraded.append(
                f"{samples.n_failed} of {samples.n_requested} samples failed"
                + (f": {'; '.join(sorted(samples.errors))}" if samples.errors else "")
            )
        degraded.extend(scored.degraded_reasons)
        usage = samples.usage
        if verbalized is not None:
            usage = usage + verbalized.usage
            _add_verbalized(scored, verbalized, degraded)
        raw_confidence = self._calibrate(scored, degraded) if calibrate else None
        return Assessment(
            reply=reply,
            scored=scored,
            answers=samples.answers,
            n_failed=samples.n_failed,
            usage=usage,
            timings_ms=timings,
            degraded_reasons=degraded,
            raw_confidence=raw_confidence,
            n_requested=samples.n_requested,
            n_budget=cfg.n_samples * len(prompts),
            rounds=samples.rounds,
            adaptive=cfg.adaptive,
            stopped_early=stopped_early,
            stop_reason=stop_reason,
            perturbation=perturbation,
        )

    async def _overlapped_round(
        self,
        retrying: Backend,
        conversation: tuple[Message, ...],
        prompt: str,
        making: Awaitable[PerturbationResult],
        reply_request: GenerationRequest,
        n: int,
    ) -> tuple[PerturbationResult, list[Generation]]:
        """Round 1 while the perturbation is made: the reply, then every prompt's samples.

        The reply and x_0's samples go out at once; x_1..x_m's when the
        perturbation is done. Returns it with the generations in the order of
        a single round (reply, x_0, x_1, ...).
        """
        early = asyncio.ensure_future(
            retrying.generate(
                [reply_request, *self._sample_requests(conversation, [prompt], n, round_index=0)]
            )
        )
        try:
            await asyncio.sleep(0)  # let the early requests go out first
            perturbation = await making
            later = self._sample_requests(
                conversation, perturbation.prompts, n, round_index=0, first_index=1
            )
            late = await retrying.generate(later) if later else []
            return perturbation, [*(await early), *late]
        finally:
            if not early.done():  # cancelled, or the perturbed samples failed
                early.cancel()
                await asyncio.wait([early])  # its requests end before this call does
            elif not early.cancelled():
                early.exception()  # seen: no "exception never retrieved" warning

    def _sample_requests(
        self,
        conversation: tuple[Message, ...],
        prompts: Sequence[str],
        n: int,
        *,
        round_index: int,
        first_index: int = 0,
    ) -> list[GenerationRequest]:
        """Each prompt's sample request for one round.

        Samples are capped at ``max_tokens`` (their own cap, not the reply's).
        With ``policy="best_of"`` a sample of the original prompt may become
        the user's answer, so those go uncapped (``max_tokens=None``: the
        reply's own cap, the model's or the caller's) and are never cut
        shorter than the reply would be. ``first_index`` is the position of
        ``prompts[0]`` among all the prompts (0 = the original).
        """
        cfg = self.config
        reply_length = cfg.policy == "best_of"
        return [
            GenerationRequest(
                messages=with_user_prompt(conversation, p),
                n=n,
                temperature=cfg.temperature,
                max_tokens=None if reply_length and index == 0 else cfg.max_tokens,
                seed_offset=round_index,
            )
            for index, p in enumerate(prompts, start=first_index)
        ]

    async def _score(
        self,
        prompts: Sequence[str],
        answers: Sequence[Sequence[str]],
        reply: Generation,
        timings: dict[str, float],
    ) -> SampleScores:
        cfg = self.config
        with self.tracing.span(SCORE_SPAN, n_prompts=len(prompts)) as score_span:
            t = time.perf_counter()
            try:
                scored = await asyncio.to_thread(
                    score_samples,
                    embedder=self.tracing.embedder(self.embedder()),
                    prompts=prompts,
                    answers=answers,
                    reply=reply.texts[0],
                    similarity=cfg.similarity,
                    n_bootstrap=cfg.n_bootstrap,
                    seed=cfg.seed,
                    cluster_threshold=cfg.cluster_threshold,
                    reply_logprobs=reply.token_logprobs[0] if reply.token_logprobs else None,
                    reply_entropies=reply.token_entropies[0] if reply.token_entropies else None,
                )
            except Exception as exc:  # never worse than no guard: the reply stands, unscored
                logger.warning("scoring failed: %s", exc, exc_info=True)
                scored = SampleScores(
                    degraded_reasons=[f"scoring failed ({type(exc).__name__}): {exc}"]
                )
            score_span.set_attribute("uq_guard.method", scored.method)
        timings["score"] += ms_since(t)
        return scored

    def _settled(
        self, scored: SampleScores, samples: _Samples, calibrate: bool
    ) -> tuple[bool, str]:
        """Whether round 1 settles the call (adaptive sampling), and why in words."""
        cfg = self.config
        if samples.n_failed:
            return False, f"round 1 lost {samples.n_failed} of {samples.n_requested} samples"
        agreement = scored.answer_agreement
        # a hair of slack so that 1.0 is reachable through float shares
        if (
            agreement is not None
            and cfg.adaptive_agreement is not None
            and agreement >= cfg.adaptive_agreement - 1e-9
        ):
            return True, (
                f"round 1 agreed: {agreement:.0%} of its answers in one cluster "
                f"(needed {cfg.adaptive_agreement:.0%})"
            )
        confidence = self._policy_confidence(scored, calibrate)
        if confidence is not None and cfg.adaptive_margin is not None:
            gap = abs(confidence - cfg.threshold)
            if gap >= cfg.adaptive_margin:
                return True, (
                    f"round-1 confidence {confidence:.2f} is {gap:.2f} from the threshold "
                    f"{cfg.threshold} (margin {cfg.adaptive_margin})"
                )
        shown = "none" if agreement is None else f"{agreement:.0%}"
        return False, f"round 1 did not settle the call (agreement {shown}): sampled the rest"

    def _policy_confidence(self, scored: SampleScores, calibrate: bool) -> float | None:
        """The confidence the policy would act on, without touching ``scored``."""
        if not calibrate or self.calibrator is None:
            return scored.confidence
        reading = self._calibration_input(scored)
        return scored.confidence if reading.probability is None else reading.probability

    def _calibrate(self, scored: SampleScores, degraded: list[str]) -> float | None:
        """Replace ``scored.confidence`` by the calibrator's P(correct); the raw value, or None.

        Only the guarded model's own scores are calibrated (the fallback is
        another model). A Platt or isotonic map of the confidence applies only
        when it was fitted on the same scorer: a map fitted on Inv-Entropy's
        confidence says nothing about Degree's. A fused calibrator picks the
        sub-model fitted for the scores this call has; when it had to impute
        one, the report is degraded and says so. A calibration that does not
        apply (or fails) degrades it too: the confidence is not what was asked.
        """
        if self.calibrator is None or scored.confidence is None:
            return None
        reading = self._calibration_input(scored)
        if reading.probability is None:
            degraded.append(f"{reading.note}; confidence left uncalibrated")
            return None
        if reading.note:
            degraded.append(reading.note)
        raw = scored.confidence
        scored.confidence = reading.probability
        return raw

    def _calibration_input(self, scored: SampleScores) -> CalibratedConfidence:
        """The calibrator's reading of this call's confidence and scores: P(correct), or why not."""
        assert self.calibrator is not None
        try:
            return self.calibrator.calibrate(
                scored.scores, confidence=scored.confidence, method=scored.method
            )
        except ConfigurationError as exc:  # a value the map refuses must not lose the reply
            return CalibratedConfidence(None, f"calibration failed: {exc}")


def _add_verbalized(scored: SampleScores, answer: Generation, degraded: list[str]) -> None:
    """Put the model's stated confidence in ``scored.scores``, or say why there is none."""
    confidence, note = read_verbalized(answer)
    if confidence is None:
        degraded.append(note or "verbalized confidence missing")
        return
    scored.scores[VERBALIZED_SCORE] = confidence


def ms_since(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading), to the microsecond."""
    return round((time.perf_counter() - start) * 1000.0, 3)
