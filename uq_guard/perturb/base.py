"""The Perturber protocol: make m variants of the user's prompt."""

from __future__ import annotations

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
        notes: anything the report should say (fewer than asked, a failure).
    """

    prompts: list[str]
    method: str
    n_requested: int
    usage: Usage = field(default_factory=Usage)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Perturber(Protocol):
    """Anything that turns one prompt into up to ``m`` variants of it."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult: ...


class NoPerturbation:
    """Samples only: no variants."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        return PerturbationResult(prompts=[], method="none", n_requested=0)
