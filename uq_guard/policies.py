"""What to do with a reply, given its confidence: the policies.

* ``annotate``: always return the reply, with the report attached.
* ``abstain``: under the threshold, return the configured refusal instead
  (the original reply stays in the report).
* ``fallback``: under the threshold, ask the fallback model and return its
  reply (both reports are kept).
* ``raise``: under the threshold, raise :class:`~uq_guard.UncertaintyAbstention`.
* ``best_of``: under the threshold, return the sampled answer to the
  original prompt that the other samples support most, when it is not the
  reply already.

Every policy acts only when ``confidence < threshold``. With no estimate
(``confidence`` None) no policy acts: the reply passes, and the report says
why (never worse than no guard).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uq_guard.report import Decision


def wants_action(confidence: float | None, threshold: float) -> bool:
    """True when the reply is not trusted enough to pass as it is (never without an estimate)."""
    return confidence is not None and confidence < threshold


def planned_decision(policy: str, confidence: float | None, threshold: float) -> Decision:
    """The decision a policy takes before any fallback or best-of work is done.

    ``raise`` maps to ``abstain`` (the adapter raises instead of returning);
    a missing confidence (None) is always ``answer``.
    """
    if policy == "annotate" or not wants_action(confidence, threshold):
        return "answer"
    if policy in ("abstain", "raise"):
        return "abstain"
    if policy == "fallback":
        return "fallback"
    return "best_of"


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
