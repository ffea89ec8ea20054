"""``Guard``: perturb -> sample -> embed -> score -> decide, for one chat call.

The steps, each in its own module:

* perturb: :mod:`uq_guard.perturb` makes the variants of the prompt (no model
  call with GAAP and WordNet); a failing perturber leaves samples only.
* sample, embed, score, calibrate: :mod:`uq_guard._assess`, in batched rounds
  through the :class:`~uq_guard.backend.Backend` seam (adaptive sampling and
  the verbalized confidence are spelled out there). Only a failed *reply*
  raises (:class:`GenerationError`); a failing scoring step leaves the call
  without an estimate, and the report says why.
* decide: the configured :mod:`uq_guard.policies` policy decides and carries
  its decision out (a refusal, the fallback model's reply, the best-supported
  sample), and this module writes the report.

What degrades a report and what is only a note is listed in
:mod:`uq_guard.report`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from uq_guard._assess import Assessment, Assessor, ms_since
from uq_guard._exceptions import (
    ConfigurationError,
    DegradedResultError,
    GenerationError,
    UncertaintyAbstention,
)
from uq_guard._limits import ConcurrencyLimit
from uq_guard._messages import normalize_messages, user_prompt
from uq_guard._retry import RetryingBackend
from uq_guard._sync import run_sync
from uq_guard.backend import Backend, Generation, Message, Usage, is_backend
from uq_guard.calibration import resolve_calibration
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
from uq_guard.policies import Situation, policy_named
from uq_guard.report import Cost, Decision, UncertaintyReport
from uq_guard.scoring.similarity import SIMILARITIES
from uq_guard.tracing import (
    CALL_SPAN,
    DECIDE_SPAN,
    PERTURB_SPAN,
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
        self.policy = policy_named(self.config.policy)
        if self.policy.needs_fallback and fallback is None:
            raise ConfigurationError(f"policy={self.policy.name!r} needs a fallback model")
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
        self._assessor = Assessor(
            self.config, self._tracing, self._retrying, lambda: self.embedder, self.calibrator
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            cfg = self.config
            self._embedder = shared_embedder(
                cfg.embedding_model,
                cfg.device,
                max_tokens=cfg.embedding_max_tokens,
                backend=cfg.embedding_backend,
            )
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
            pairs_per_generation=cfg.gaap_pairs_per_generation,
            delta=cfg.gaap_delta,
            min_fidelity=cfg.gaap_min_fidelity,
            protected=cfg.gaap_protected,
            # GAAP's fitness compares prompts: an embedding similarity (answer_words' prompt side)
            similarity=cfg.similarity if cfg.similarity in SIMILARITIES else "shifted_cosine",
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

        perturb_ms = 0.0

        async def perturb() -> PerturbationResult:
            nonlocal perturb_ms
            t = time.perf_counter()
            with self._tracing.span(PERTURB_SPAN) as perturb_span:
                perturbation = await self._perturb(prompt)
                record_perturbation(perturb_span, perturbation)
            perturb_ms = ms_since(t)
            return perturbation

        # the reply and x_0's samples are asked for while the perturbation is made
        assessment = await self._assessor.assess(
            self.backend, conversation, prompt, perturb(), calibrate=True
        )
        perturbation = assessment.perturbation
        assert perturbation is not None
        assessment.timings_ms["perturb"] = perturb_ms
        usage = perturbation.usage + assessment.usage

        notes = [*perturbation.notes, *assessment.notes]
        if self._calibration_note:
            notes.append(self._calibration_note)
        degraded = [*_perturbation_shortfall(perturbation), *assessment.degraded_reasons]
        if assessment.scored.confidence is None:
            degraded.append("no uncertainty estimate: the reply is returned as it is")
        with self._tracing.span(
            DECIDE_SPAN, policy=cfg.policy, threshold=cfg.threshold
        ) as decide_span:
            situation = self._situation(assessment, conversation, prompt, perturbation)
            verdict = await self.policy.decide(situation)
            decide_span.set_attribute("uq_guard.decision", verdict.decision)
        degraded.extend(verdict.degraded_reasons)
        fallback = verdict.fallback
        if fallback is not None:
            usage = usage + fallback.usage

        report = _report(
            assessment,
            perturbation,
            usage=usage,
            degraded_reasons=degraded,
            notes=notes,
            decision=verdict.decision,
            policy=cfg.policy,
            threshold=cfg.threshold,
            text=verdict.text,
            original_reply=verdict.original_reply,
            fallback=fallback.report if fallback is not None else None,
            include_samples=cfg.include_samples,
        )
        report.timings_ms["total"] = ms_since(started)
        record_report(call_span, report)
        result = GuardResult(
            text=verdict.text,
            report=report,
            reply=assessment.reply,
            fallback_reply=fallback.reply if fallback is not None else None,
            usage=usage,
        )
        if cfg.strict and report.degraded:
            raise DegradedResultError("; ".join(report.degraded_reasons), report)
        if verdict.raises:
            reply = assessment.reply
            raise UncertaintyAbstention(report, reply=reply.raw[0] if reply.raw else reply.texts[0])
        return result

    def _situation(
        self,
        assessment: Assessment,
        conversation: tuple[Message, ...],
        prompt: str,
        perturbation: PerturbationResult,
    ) -> Situation:
        """What the policy sees of this call (the fallback model runs only if it asks)."""
        reply = assessment.reply.texts[0]
        ask_fallback = None
        if self.fallback is not None:
            ask_fallback = functools.partial(self._run_fallback, conversation, prompt, perturbation)
        return Situation(
            reply=reply,
            confidence=assessment.scored.confidence,
            threshold=self.config.threshold,
            abstain_message=self.config.abstain_message,
            candidates=[reply, *assessment.answers[0]],
            support=assessment.scored.candidate_support,
            ask_fallback=ask_fallback,
        )

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

    async def _run_fallback(
        self, conversation: tuple[Message, ...], prompt: str, perturbation: PerturbationResult
    ) -> GuardResult | str:
        """The fallback model's guarded reply, or why it could not be had."""
        assert self.fallback is not None
        try:
            assessment = await self._assessor.assess(
                self.fallback, conversation, prompt, perturbation
            )
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
    assessment: Assessment,
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
