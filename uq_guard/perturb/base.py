"""The Perturber protocol: make m variants of the user's prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from uq_guard.backend import Usage


@dataclass
class PerturbationResult:
    """Perturbed prompts and what making them took.

    Attributes:
        prompts: the variants x_1..x_m (may be fewer than asked).
        method: the perturber's name, reported to the user.
        n_requested: how many were asked for.
        usage: model calls spent making them (zero for model-free perturbers).
        notes: information for the report that loses nothing (a long prompt
            capped, a lexicon without substitutes): never marks it degraded.
        degraded_reasons: what lost information (a failed request, fewer
            real variants than asked): the report is marked degraded.
        lexicon: where substitutes came from (GAAP: ``wordnet``, ``model``,
            ``user``, ``none`` or a ``+``-joined union); None for perturbers
            without a lexicon.
        n_real: how many of ``prompts`` are real, distinct variants rather than
            padding repeats; None means all of them.
    """

    prompts: list[str]
    method: str
    n_requested: int
    usage: Usage = field(default_factory=Usage)
    notes: list[str] = field(default_factory=list)
    lexicon: str | None = None
    degraded_reasons: list[str] = field(default_factory=list)
    n_real: int | None = None

    @property
    def real_count(self) -> int:
        """How many prompts are real variants (all of them unless ``n_real`` says fewer)."""
        if self.n_real is None:
            return len(self.prompts)
        return min(self.n_real, len(self.prompts))


@runtime_checkable
class Perturber(Protocol):
    """Anything that turns one prompt into up to ``m`` variants of it."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult: ...


class NoPerturbation:
    """Samples only: no variants."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        return PerturbationResult(prompts=[], method="none", n_requested=0)


class MixedPerturber:
    """Several perturbers sharing the m variants (``perturbation="gaap+paraphrase"``).

    ``m`` is split as evenly as possible, the first perturbers taking the
    remainder; they run concurrently and their variants are concatenated in
    order, duplicates dropped. The result's ``n_real`` counts real variants
    from every part, its ``lexicon`` is the first part's that has one.

    Args:
        perturbers: the parts, in order.
        method: the name reported (default: the parts' names joined by ``+``).
    """

    def __init__(self, perturbers: Sequence[Perturber], *, method: str | None = None) -> None:
        if not perturbers:
            raise ValueError("MixedPerturber needs at least one perturber")
        self.perturbers = list(perturbers)
        self.method = method or "+".join(
            getattr(p, "method", type(p).__name__) for p in self.perturbers
        )

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        if m <= 0:
            return PerturbationResult(prompts=[], method=self.method, n_requested=0)
        k = len(self.perturbers)
        shares = [m // k + (1 if i < m % k else 0) for i in range(k)]
        parts = await asyncio.gather(
            *(p.perturb(prompt, share) for p, share in zip(self.perturbers, shares, strict=True))
        )
        prompts: list[str] = []
        seen: set[str] = set()
        n_real = 0
        usage = Usage()
        notes: list[str] = []
        degraded: list[str] = []
        for part in parts:
            real = part.prompts[: part.real_count]
            for text in real:
                if text not in seen:
                    seen.add(text)
                    n_real += 1
            prompts.extend(text for text in real if text not in prompts)
            usage = usage + part.usage
            notes.extend(part.notes)
            degraded.extend(part.degraded_reasons)
        # padding repeats (if any part padded) go last, after every real variant
        for part in parts:
            prompts.extend(part.prompts[part.real_count :])
        return PerturbationResult(
            prompts=prompts[:m],
            method=self.method,
            n_requested=m,
            usage=usage,
            notes=notes,
            degraded_reasons=degraded,
            lexicon=next((p.lexicon for p in parts if p.lexicon), None),
            n_real=min(n_real, m),
        )
