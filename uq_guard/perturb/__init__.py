"""Prompt perturbers: ways to make the variants x_1..x_m of the user's prompt.

* :class:`GAAPPerturber` (the default): genetic-algorithm perturbation with a
  lexicon (:mod:`uq_guard.perturb.lexicon`), no model call with WordNet.
* :class:`ModelParaphraser`: asks the model for m paraphrases in one call.
* :class:`MixedPerturber`: several perturbers sharing the m variants.
* :class:`NoPerturbation`: samples only.
"""

from uq_guard.perturb.base import (
    MixedPerturber,
    NoPerturbation,
    PerturbationResult,
    Perturber,
)
from uq_guard.perturb.gaap import GAAPPerturber, GAAPRun
from uq_guard.perturb.lexicon import (
    CombinedLexicon,
    Lexicon,
    ModelLexicon,
    NoLexicon,
    Substitutions,
    UserLexicon,
    WordNetLexicon,
    default_lexicon,
)
from uq_guard.perturb.paraphrase import ModelParaphraser, parse_paraphrases
from uq_guard.perturb.wordnet import provision_wordnet, wordnet_available

__all__ = [
    "CombinedLexicon",
    "GAAPPerturber",
    "GAAPRun",
    "Lexicon",
    "MixedPerturber",
    "ModelLexicon",
    "ModelParaphraser",
    "NoLexicon",
    "NoPerturbation",
    "PerturbationResult",
    "Perturber",
    "Substitutions",
    "UserLexicon",
    "WordNetLexicon",
    "default_lexicon",
    "parse_paraphrases",
    "provision_wordnet",
    "wordnet_available",
]
