"""What to do with a reply, given its confidence: the policies.

* ``annotate``: always return the reply, with the report attached.
* ``abstain``: under the threshold, return the configured refusal instead
  (the original reply stays in the report).
* ``fallback``: under the threshold, ask the fallback model and return its
  reply (both reports are kept).
* ``raise``: under the threshold, raise :class:`~uq_guard.UncertaintyAbstention`.
* ``best_of``: under the threshold, return the sampled answer to the
  original prompt that the other samples support most, when it is not the
  reply already. Under this policy the original prompt's samples are drawn
  at the reply's length, not at the samples' cap ``max_tokens``, so the
  answer returned is never cut shorter than the reply would have been.

Every policy acts only when ``confidence < threshold``. With no estimate
(``confidence`` None) no policy acts: the reply passes, and the report says
why (never worse than no guard).

Each policy is one :class:`Policy` here that both decides and carries the
decision out: :class:`~uq_guard.Guard` hands it a :class:`Situation` (the
reply, its confidence, the sampled answers, a way to ask the fallback model)
and reports the :class:`Verdict` it returns. To add a policy, write a
subclass below and add it to :data:`POLICIES` (``GuardConfig`` accepts the
names of ``uq_guard.config.POLICIES``, which a test keeps equal to it), then
test it in ``tests/unit/test_policies.py`` with a :class:`Situation`: no
model is needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from uq_guard._exceptions import ConfigurationError
from uq_guard.report import Decision

if TYPE_CHECKING:
    from uq_guard.engine import GuardResult

__all__ = [
    "POLICIES",
    "Abstain",
    "Annotate",
    "BestOf",
    "Fallback",
    "Policy",
    "Raise",
    "Situation",
    "Verdict",
    "best_supported",
    "planned_decision",
    "policy_named",
    "wants_action",
]


def wants_action(confidence: float | None, threshold: float) -> bool:
    """True when the reply is not trusted enough to pass as it is (never without an estimate)."""
    return confidence is not None and confidence < threshold


@dataclass(frozen=True)
class Situation:
    """What a policy sees of one guarded call.

    Attributes:
        reply: the model's reply.
        confidence: its confidence (calibrated when a calibration applied); None = no estimate.
        threshold: the policies act under it.
        abstain_message: the refusal an abstaining policy returns.
        candidates: the reply, then the sampled answers to the original prompt.
        support: one support value per candidate (higher = more agreed with).
        ask_fallback: runs the fallback model under the guard, once; gives
            its result, or why it could not be had. None without a fallback model.
    """

    reply: str
    confidence: float | None
    threshold: float
    abstain_message: str
    candidates: Sequence[str] = ()
    support: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ask_fallback: Callable[[], Awaitable[GuardResult | str]] | None = None

    def passed(self) -> Verdict:
        """The reply as it is."""
        return Verdict("answer", self.reply)

    def replaced(self, decision: Decision, text: str) -> Verdict:
        """``text`` instead of the reply, which the report keeps as ``original_reply``."""
        return Verdict(decision, text, original_reply=self.reply)


@dataclass(frozen=True)
class Verdict:
    """A policy's decision about one call, carried out.

    Attributes:
        decision: what the report says was done.
        text: what the user gets.
        original_reply: the model's reply, when ``text`` replaces it.
        fallback: the fallback model's guarded result, when it answered.
        degraded_reasons: what the policy could not do (a fallback that failed).
        raises: the guard raises :class:`~uq_guard.UncertaintyAbstention`
            with the report instead of returning it (after strict mode's check).
    """

    decision: Decision
    text: str
    original_reply: str | None = None
    fallback: GuardResult | None = None
    degraded_reasons: tuple[str, ...] = ()
    raises: bool = False


class Policy:
    """One policy: what it decides when a reply is not trusted, and doing it.

    Attributes:
        name: the ``GuardConfig.policy`` value.
        decision: the decision it plans when it acts (before any work, which
            may still end in ``answer``).
        needs_fallback: a :class:`~uq_guard.Guard` with it needs a fallback model.
    """

    name: ClassVar[str]
    decision: ClassVar[Decision]
    needs_fallback: ClassVar[bool] = False

    def planned(self, confidence: float | None, threshold: float) -> Decision:
        """The decision before any fallback or best-of work is done."""
        return self.decision if wants_action(confidence, threshold) else "answer"

    async def decide(self, situation: Situation) -> Verdict:
        """The reply as it is when it is trusted (or unscored), else what :meth:`act` does."""
        if not wants_action(situation.confidence, situation.threshold):
            return situation.passed()
        return await self.act(situation)

    async def act(self, situation: Situation) -> Verdict:
        """What to return instead of an untrusted reply."""
        raise NotImplementedError


class Annotate(Policy):
    """Always the reply: the report says how far to trust it."""

    name = "annotate"
    decision = "answer"

    async def act(self, situation: Situation) -> Verdict:
        return situation.passed()


class Abstain(Policy):
    """The configured refusal instead of an untrusted reply."""

    name = "abstain"
    decision = "abstain"

    async def act(self, situation: Situation) -> Verdict:
        return situation.replaced("abstain", situation.abstain_message)


class Raise(Abstain):
    """Abstain by raising :class:`~uq_guard.UncertaintyAbstention`, which carries the report."""

    name = "raise"

    async def act(self, situation: Situation) -> Verdict:
        return replace(await super().act(situation), raises=True)


class Fallback(Policy):
    """The fallback model's guarded reply; the original reply when the fallback fails."""

    name = "fallback"
    decision = "fallback"
    needs_fallback = True

    async def act(self, situation: Situation) -> Verdict:
        if situation.ask_fallback is None:
            raise ConfigurationError("policy='fallback' needs a fallback model")
        answer = await situation.ask_fallback()
        if isinstance(answer, str):  # why the fallback could not answer
            return Verdict("answer", situation.reply, degraded_reasons=(answer,))
        return replace(situation.replaced("fallback", answer.text), fallback=answer)


class BestOf(Policy):
    """The best-supported sampled answer to the original prompt, when it is not the reply."""

    name = "best_of"
    decision = "best_of"

    async def act(self, situation: Situation) -> Verdict:
        best = best_supported(situation.candidates, situation.support, situation.reply)
        return situation.passed() if best is None else situation.replaced("best_of", best)


#: Every policy by name, in the order ``GuardConfig`` lists them.
POLICIES: dict[str, Policy] = {
    policy.name: policy for policy in (Annotate(), Abstain(), Fallback(), Raise(), BestOf())
}


def policy_named(name: str) -> Policy:
    """The policy ``GuardConfig.policy`` names.

    Raises:
        ConfigurationError: no policy has that name.
    """
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}"
        ) from None


def planned_decision(policy: str, confidence: float | None, threshold: float) -> Decision:
    """The decision a policy takes before any fallback or best-of work is done.

    ``raise`` maps to ``abstain`` (the adapter raises instead of returning);
    a missing confidence (None) is always ``answer``.
    """
    return policy_named(policy).planned(confidence, threshold)


def best_supported(candidates: Sequence[str], support: np.ndarray, reply: str) -> str | None:
    """The best-supported candidate when it is more supported than ``reply``, else None.

    Args:
        candidates: the reply first, then the sampled answers to x_0.
        support: one support value per candidate (higher = more agreed with).
        reply: the reply the user would otherwise get.
    """
    if len(candidates) < 2:
        return None
    best = int(np.argmax(support))
    if candidates[best].strip() == reply.strip() or support[best] <= support[0]:
        return None
    return candidates[best]
