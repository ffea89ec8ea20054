"""The math of uq_guard: pure functions from similarity matrices and token statistics to scores.

* :mod:`~uq_guard.scoring.inv_entropy`: Inv-Entropy and its companion measures;
* :mod:`~uq_guard.scoring.similarity`: similarity matrices from embeddings;
* :mod:`~uq_guard.scoring.baselines`: Degree, EigV, Eccentricity, semantic
  entropy, Semantic Volume, and the support used by best-of;
* :mod:`~uq_guard.scoring.whitebox`: G-NLL, mean token entropy, Entropy Area Score;
* :mod:`~uq_guard.scoring.verbalized`: reading a model's stated confidence.
"""

from uq_guard.scoring.baselines import (
    degree_uncertainty,
    eccentricity_uncertainty,
    eigv_uncertainty,
    largest_cluster_share,
    semantic_entropy,
    semantic_volume,
    support,
)
from uq_guard.scoring.inv_entropy import InvEntropyResult, inv_entropy
from uq_guard.scoring.similarity import (
    SIMILARITIES,
    check_similarity_matrix,
    cosine_matrix,
    similarity_matrix,
)
from uq_guard.scoring.verbalized import parse_verbalized_confidence
from uq_guard.scoring.whitebox import entropy_area_score, gnll, max_token_nll, mean_token_entropy

__all__ = [
    "SIMILARITIES",
    "InvEntropyResult",
    "check_similarity_matrix",
    "cosine_matrix",
    "degree_uncertainty",
    "eccentricity_uncertainty",
    "eigv_uncertainty",
    "entropy_area_score",
    "gnll",
    "inv_entropy",
    "largest_cluster_share",
    "max_token_nll",
    "mean_token_entropy",
    "parse_verbalized_confidence",
    "semantic_entropy",
    "semantic_volume",
    "similarity_matrix",
    "support",
]
