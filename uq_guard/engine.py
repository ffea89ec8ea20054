"""``Guard``: perturb -> sample -> embed -> score -> decide, for one chat call.

Model calls go through the :class:`~uq_guard.backend.Backend` seam in
batched rounds: the perturbations (none for model-free perturbers), then the
reply and every sample together in one batch. Failed samples are retried when
retryable, then left out and reported; only a failed *reply* raises
(:class:`GenerationError`). A failing scoring step (the embedder, a user
similarity) never loses the reply either: the call has no estimate and the
report says why.

What degrades a report and what is only a note is listed in
:mod:`uq_guard.report`.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from uq_guard._exceptions import (
    ConfigurationError,
    DegradedResultError,
    GenerationError,
    UncertaintyAbstention,
)
from uq_guard._limits import ConcurrencyLimit
from uq_guard._messages import normalize_messages, user_prompt, with_user_prompt
from uq_guard._retry import RetryingBackend
from uq_guard._sync import run_sync
from uq_guard.backend import (
    Backend,
    Generation,
    GenerationRequest,
    Message,
    Usage,
    is_backend,
)
from uq_guard.calibration import CalibratedConfidence, resolve_calibration
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder, shared_embedder
from uq_guard.perturb import (
    GAAPPerturber,
    MixedPerturber,
    ModelParaphraser,
    NoPerturbation,
    PerturbationResult,
    Perturber,
    default_lexicon,
)
from uq_guard.policies import best_supported, planned_decision
from uq_guard.report import Cost, Decision, UncertaintyReport
from uq_guard.scoring.suite import SampleScores, score_samples
from uq_guard.scoring.verbalized import VERBALIZED_SCORE, read_verbalized, verbalized_request
from uq_guard.tracing import (
    CALL_SPAN,
    DECIDE_SPAN,
    PERTURB_SPAN,
    SCORE_SPAN,
    GuardTracing,
    record_perturbation,
    record_report,
)

logger = logging.getLogger(__name__)


@dataclass
class GuardResult:
    """A guarded call's outcome.

    Attributes:
        text: what the user should get (the reply, a refusal, a fallback
            reply or the best-supported sample: see ``report.decision``).
        report: the uncertainty report.
        reply: the model's own reply (``reply.raw[0]`` is the backend's
            native object, an ``AIMessage`` for LangChain).
        fallback_reply: the fallback model's reply, when it ran.
    """

    text: str
    report: UncertaintyReport
    reply: Generation
    fallback_reply: Generation | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def decision(self) -> str:
        return self.report.decision


@dataclass
class _Assessment:
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


class Guard:
    """Guard chat calls to one model with Inv-Entropy and a policy.

    Args:
        backend: the model (see :class:`~uq_guard.backend.Backend`).
        config: a :class:`GuardConfig`; keyword ``overrides`` are applied on top.
        embedder: defaults to the process-wide cached sentence-transformers
            embedder of ``config.embedding_model``.
        perturber: defaults to what ``config.perturbation`` names.
        fallback: the backend asked when ``policy="fallback"`` acts.
        model_limit: the cap on model requests in flight, shared by every call
            of this guard (and its fallback); defaults to one of
            ``config.max_concurrency`` slots. Build a guard once per wrapper
            and reuse it, so the cap holds across calls (and the calibration
            file is read once); pass one limit to several guards to share it.
        tracer_provider: the OpenTelemetry ``TracerProvider`` that gets this
            guard's spans (see :mod:`uq_guard.tracing`); None: the global one.

    Raises:
        ConfigurationError: bad settings, or ``policy="fallback"`` without a fallback.
    """

    def __init__(
        self,
        backend: Backend,
        config: GuardConfig | None = None,
        *,
        embedder: Embedder | None = None,
        perturber: Perturber | None = None,
        fallback: Backend | None = None,
        model_limit: ConcurrencyLimit | None = None,
        tracer_provider: Any = None,
        **overrides: Any,
    ) -> None:
        self.config = GuardConfig.build(config, **overrides)
        if not is_backend(backend):
            raise ConfigurationError(
                f"backend must have an async generate(requests) method, got {type(backend)!r}"
            )
        if self.config.policy == "fallback" and fallback is None:
            raise ConfigurationError("policy='fallback' needs a fallback model")
        self.backend = backend
        self.fallback = fallback
        self.model_limit = model_limit or ConcurrencyLimit(self.config.max_concurrency)
        self._embedder = embedder
        self._tracing = GuardTracing(tracer_provider)
        self.perturber = perturber or self._default_perturber(backend)
        self.calibrator = resolve_calibration(self.config.calibration)
        # a calibration fitted under other sampling or scoring settings still applies, and
        # every report notes it: its P(correct) was learnt on other score distributions. A
        # note, not degradation: nothing of this call was lost, and strict mode must not raise
        self._calibration_note = (
            self.calibrator.settings_note(dict(self.config)) if self.calibrator else ""
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder(self.config.embedding_model, self.config.device)
        return self._embedder

    def _retrying(self, backend: Backend) -> RetryingBackend:
        cfg = self.config
        return RetryingBackend(
            backend,
            max_retries=cfg.max_retries,
            first_wait_s=cfg.retry_wait_s,
            timeout_s=cfg.timeout_s,
            limit=self.model_limit,
        )

    def _default_perturber(self, backend: Backend) -> Perturber:
        cfg = self.config
        if cfg.perturbation == "none" or cfg.n_perturbations == 0:
            return NoPerturbation()
        paraphraser = ModelParaphraser(
            self._retrying(backend),
            temperature=cfg.temperature,
            max_tokens=min(1024, 48 * cfg.n_perturbations + 64),
        )
        if cfg.perturbation == "paraphrase":
            return paraphraser
        gaap = GAAPPerturber(
            lambda: self.embedder,
            default_lexicon(
                cfg.gaap_lexicon,
                backend=self._retrying(backend),
                user_substitutions=cfg.gaap_substitutions,
                embedder=lambda: self.embedder,
                sense="context" if cfg.gaap_edits == "preserving" else "any",
            ),
            edits=cfg.gaap_edits,
            frames=cfg.gaap_frames,
            key_ratio=cfg.gaap_key_ratio,
            max_generations=cfg.gaap_max_generations,
            max_population=cfg.gaap_max_population,
            delta=cfg.gaap_delta,
            min_fidelity=cfg.gaap_min_fidelity,
            protected=cfg.gaap_protected,
            similarity=cfg.similarity if isinstance(cfg.similarity, str) else "shifted_cosine",
            seed=cfg.seed,
        )
        if cfg.perturbation == "gaap":
            return gaap
        return MixedPerturber([gaap, paraphraser])

    # -- public entry points ------------------------------------------------

    def run(self, messages: str | Sequence[Message]) -> GuardResult:
        """Sync twin of :meth:`arun` (safe inside a running event loop)."""
        return run_sync(self.arun(messages))

    async def arun(self, messages: str | Sequence[Message]) -> GuardResult:
        """Answer ``messages`` and assess the answer.

        Raises:
            ConfigurationError: malformed messages.
            GenerationError: the reply itself could not be generated.
            UncertaintyAbstention: ``policy="raise"`` and confidence is under the threshold.
            DegradedResultError: ``strict=True`` and something degraded the estimate.
        """
        with self._tracing.span(CALL_SPAN) as call_span:
            return await self._arun(messages, call_span)

    async def _arun(self, messages: str | Sequence[Message], call_span: Any) -> GuardResult:
        started = time.perf_counter()
        conversation = normalize_messages(messages)
        prompt = user_prompt(conversation)
        cfg = self.config

        t = time.perf_counter()
        with self._tracing.span(PERTURB_SPAN) as perturb_span:
            perturbation = await self._perturb(prompt)
            record_perturbation(perturb_span, perturbation)
        perturb_ms = _ms_since(t)
        assessment = await self._assess(
            self.backend, conversation, prompt, perturbation, calibrate=True
        )
        assessment.timings_ms["perturb"] = perturb_ms
        usage = perturbation.usage + assessment.usage
        reply_text = assessment.reply.texts[0]
        scored = assessment.scored

        notes = [*perturbation.notes, *assessment.notes]
        if self._calibration_note:
            notes.append(self._calibration_note)
        degraded = [*_perturbation_shortfall(perturbation), *assessment.degraded_reasons]
        if scored.confidence is None:
            degraded.append("no uncertainty estimate: the reply is returned as it is")
        with self._tracing.span(
            DECIDE_SPAN, policy=cfg.policy, threshold=cfg.threshold
        ) as decide_span:
            decision: Decision = planned_decision(cfg.policy, scored.confidence, cfg.threshold)

            text = reply_text
            original_reply = None
            fallback_report = None
            fallback_reply = None
            if decision == "abstain":
                text, original_reply = cfg.abstain_message, reply_text
            elif decision == "best_of":
                best = best_supported(
                    [reply_text, *assessment.answers[0]], scored.candidate_support, reply_text
                )
                if best is None:
                    decision = "answer"
                else:
                    text, original_reply = best, reply_text
            elif decision == "fallback":
                fallback_result = await self._run_fallback(conversation, prompt, perturbation)
                if isinstance(fallback_result, str):
                    decision = "answer"
                    degraded.append(fallback_result)
                else:
                    fallback_reply, fallback_report = fallback_result.reply, fallback_result.report
                    text, original_reply = fallback_result.text, reply_text
                    usage = usage + fallback_result.usage
            decide_span.set_attribute("uq_guard.decision", decision)

        report = _report(
            assessment,
            perturbation,
            usage=usage,
            degraded_reasons=degraded,
            notes=notes,
            decision=decision,
            policy=cfg.policy,
            threshold=cfg.threshold,
            text=text,
            original_reply=original_reply,
            fallback=fallback_report,
            include_samples=cfg.include_samples,
        )
        report.timings_ms["total"] = _ms_since(started)
        record_report(call_span, report)
        result = GuardResult(
            text=text,
            report=report,
            reply=assessment.reply,
            fallback_reply=fallback_reply,
            usage=usage,
        )
        if cfg.strict and report.degraded:
            raise DegradedResultError("; ".join(report.degraded_reasons), report)
        if cfg.policy == "raise" and decision == "abstain":
            native = assessment.reply.raw[0] if assessment.reply.raw else reply_text
            raise UncertaintyAbstention(report, reply=native)
        return result

    # -- steps ------------------------------------------------------------

    async def _perturb(self, prompt: str) -> PerturbationResult:
        m = self.config.n_perturbations
        try:
            result = await self.perturber.perturb(prompt, m)
        except Exception as exc:  # a broken perturber degrades to samples only
            logger.warning("perturbation failed: %s", exc)
            result = PerturbationResult(
                prompts=[],
                method=type(self.perturber).__name__,
                n_requested=m,
                degraded_reasons=[f"perturbation failed: {exc}"],
            )
        n_real = result.real_count
        # keep the real variants and the padding apart while cleaning, so n_real stays true
        real = [p for p in result.prompts[:n_real] if p.strip() and p != prompt]
        padding = [p for p in result.prompts[n_real:] if p.strip() and p != prompt]
        result.prompts = (real + padding)[:m]
        result.n_real = min(len(real), len(result.prompts))
        return result

    async def _assess(
        self,
        backend: Backend,
        conversation: tuple[Message, ...],
        prompt: str,
        perturbation: PerturbationResult,
        *,
        calibrate: bool = False,
    ) -> _Assessment:
        cfg = self.config
        retrying = self._tracing.backend(self._retrying(backend))
        prompts = [prompt, *perturbation.prompts]
        first = cfg.adaptive_first_samples if cfg.adaptive else cfg.n_samples
        reply_request = GenerationRequest(messages=conversation, want_logprobs=True)
        timings = {"generate": 0.0, "score": 0.0}

        t = time.perf_counter()
        reply, *round_one = await retrying.generate(
            [reply_request, *self._sample_requests(conversation, prompts, first, round_index=0)]
        )
        timings["generate"] += _ms_since(t)
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
            timings["generate"] += _ms_since(t)
            if pending:  # the confidence question rode along with round 2
                verbalized, pending = generations.pop(), []
            samples.add(generations, rest)
            scored = await self._score(prompts, samples.answers, reply, timings)
        if pending:
            t = time.perf_counter()
            [verbalized] = await retrying.generate(pending)
            timings["generate"] += _ms_since(t)

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
        return _Assessment(
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
        )

    def _sample_requests(
        self, conversation: tuple[Message, ...], prompts: Sequence[str], n: int, *, round_index: int
    ) -> list[GenerationRequest]:
        cfg = self.config
        return [
            GenerationRequest(
                messages=with_user_prompt(conversation, p),
                n=n,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed_offset=round_index,
            )
            for p in prompts
        ]

    async def _score(
        self,
        prompts: Sequence[str],
        answers: Sequence[Sequence[str]],
        reply: Generation,
        timings: dict[str, float],
    ) -> SampleScores:
        cfg = self.config
        with self._tracing.span(SCORE_SPAN, n_prompts=len(prompts)) as score_span:
            t = time.perf_counter()
            try:
                scored = await asyncio.to_thread(
                    score_samples,
                    embedder=self._tracing.embedder(self.embedder),
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
        timings["score"] += _ms_since(t)
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

    async def _run_fallback(
        self, conversation: tuple[Message, ...], prompt: str, perturbation: PerturbationResult
    ) -> GuardResult | str:
        """The fallback model's guarded reply, or why it could not be had."""
        assert self.fallback is not None
        try:
            assessment = await self._assess(self.fallback, conversation, prompt, perturbation)
        except GenerationError as exc:
            return f"fallback model failed, original reply kept: {exc}"
        report = _report(
            assessment,
            perturbation,
            usage=assessment.usage,
            degraded_reasons=assessment.degraded_reasons,
            notes=assessment.notes,
            decision="answer",
            policy="annotate",
            threshold=self.config.threshold,
            text=assessment.reply.texts[0],
        )
        return GuardResult(
            text=assessment.reply.texts[0],
            report=report,
            reply=assessment.reply,
            usage=assessment.usage,
        )


def _report(
    assessment: _Assessment,
    perturbation: PerturbationResult,
    *,
    usage: Usage,
    degraded_reasons: list[str],
    notes: list[str],
    decision: Decision,
    policy: str,
    threshold: float,
    text: str,
    original_reply: str | None = None,
    fallback: UncertaintyReport | None = None,
    include_samples: bool = False,
) -> UncertaintyReport:
    scored = assessment.scored
    has_estimate = scored.confidence is not None
    return UncertaintyReport(
        # no estimate is None, not 0.0: a 0.0 would read as "sure it is wrong"
        confidence=scored.confidence,
        uncertainty=float(scored.uncertainty) if has_estimate else None,
        method=scored.method,
        scores=scored.scores,
        decision=decision,
        policy=policy,
        threshold=threshold,
        reply=text,
        original_reply=original_reply,
        perturbation_method=perturbation.method,
        perturbations=perturbation.prompts,
        n_perturbations_requested=perturbation.n_requested,
        perturbation_lexicon=perturbation.lexicon,
        n_perturbations_real=perturbation.real_count,
        n_prompts=1 + len(perturbation.prompts),
        n_samples=sum(len(a) for a in assessment.answers),
        n_failed=assessment.n_failed,
        n_samples_requested=assessment.n_requested,
        n_samples_budget=assessment.n_budget,
        sampling_rounds=assessment.rounds,
        adaptive=assessment.adaptive,
        adaptive_stopped_early=assessment.stopped_early,
        adaptive_stop_reason=assessment.stop_reason,
        calibrated=assessment.raw_confidence is not None,
        raw_confidence=assessment.raw_confidence,
        samples=assessment.answers if include_samples else None,
        cost=Cost(
            model_calls=usage.model_calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
        timings_ms=dict(assessment.timings_ms),
        degraded=bool(degraded_reasons),
        degraded_reasons=list(degraded_reasons),
        notes=list(notes),
        fallback=fallback,
    )


def _perturbation_shortfall(perturbation: PerturbationResult) -> list[str]:
    """Why the perturbation lost information, or [] when every variant asked for is real.

    A perturber that explains its shortfall says so in ``degraded_reasons``;
    one that does not (a user's perturber, or variants the engine dropped as
    copies of the prompt) still degrades the report, in the engine's words.
    """
    if perturbation.degraded_reasons:
        return list(perturbation.degraded_reasons)
    asked, real = perturbation.n_requested, perturbation.real_count
    if real < asked:
        return [f"{real} of {asked} perturbations are real variants"]
    return []


def _add_verbalized(scored: SampleScores, answer: Generation, degraded: list[str]) -> None:
    """Put the model's stated confidence in ``scored.scores``, or say why there is none."""
    confidence, note = read_verbalized(answer)
    if confidence is None:
        degraded.append(note or "verbalized confidence missing")
        return
    scored.scores[VERBALIZED_SCORE] = confidence


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
