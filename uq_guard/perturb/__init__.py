"""Prompt perturbers: ways to make the variants x_1..x_m of the user's prompt."""

from uq_guard.perturb.base import NoPerturbation, PerturbationResult, Perturber
from uq_guard.perturb.paraphrase import ModelParaphraser, parse_paraphrases

__all__ = [
    "ModelParaphraser",
    "NoPerturbation",
    "PerturbationResult",
    "Perturber",
    "parse_paraphrases",
]
