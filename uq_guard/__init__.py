"""uq_guard: know when not to trust your LLM.

Wrap a chat model and every reply carries an uncertainty report (Inv-Entropy
over perturbed prompts and sampled answers), or is replaced by an abstention,
a fallback model's reply or an exception, as your policy says::

    import uq_guard
    guarded = uq_guard.guard(chat_model, policy="abstain", threshold=0.5)
"""

from uq_guard._exceptions import (
    ConfigurationError,
    DegradedResultError,
    EmbeddingError,
    GenerationError,
    MissingDependencyError,
    UncertaintyAbstention,
    UndefinedMetricError,
    UnsupportedModelError,
    UQGuardError,
)
from uq_guard._guard import guard
from uq_guard.backend import Backend, Generation, GenerationRequest, Usage
from uq_guard.config import GuardConfig
from uq_guard.config_sections import (
    AdaptiveSettings,
    PerturbationSettings,
    PolicySettings,
    SamplingSettings,
    ScoringSettings,
    TransportSettings,
)
from uq_guard.embeddings import Embedder, SentenceTransformerEmbedder
from uq_guard.engine import Guard, GuardResult
from uq_guard.report import Cost, UncertaintyReport
from uq_guard.scoring.inv_entropy import InvEntropyResult, inv_entropy

__version__ = "0.1.0"

__all__ = [
    "AdaptiveSettings",
    "Backend",
    "ConfigurationError",
    "Cost",
    "DegradedResultError",
    "Embedder",
    "EmbeddingError",
    "Generation",
    "GenerationError",
    "GenerationRequest",
    "Guard",
    "GuardConfig",
    "GuardResult",
    "InvEntropyResult",
    "MissingDependencyError",
    "PerturbationSettings",
    "PolicySettings",
    "SamplingSettings",
    "ScoringSettings",
    "SentenceTransformerEmbedder",
    "TransportSettings",
    "UQGuardError",
    "UncertaintyAbstention",
    "UncertaintyReport",
    "UndefinedMetricError",
    "UnsupportedModelError",
    "Usage",
    "__version__",
    "guard",
    "inv_entropy",
]
