"""White-box uncertainty of one answer from its per-token statistics (ALGORITHMS §4).

Used when the model returns token log-probabilities: G-NLL (Aichberger et al.
2024), the maximum token NLL (the reply's least likely token, SelfCheckGPT's
"Max(-log p)" baseline, Manakul et al. 2023), the mean token entropy, and an
Entropy Area Score ("Uncertainty Under the Curve", 2025). Each returns an
uncertainty (higher = less sure) and 0.0 for an answer with no tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uq_guard._exceptions import ConfigurationError

__all__ = ["WHITEBOX_SCORES", "entropy_area_score", "gnll", "max_token_nll", "mean_token_entropy"]

#: The scores of this module, by their report names: a call has them all or
#: none (they need the backend's token log-probabilities).
WHITEBOX_SCORES = frozenset({"gnll", "max_token_nll", "mean_token_entropy", "entropy_area_score"})


def _as_token_values(values: Sequence[float], name: str) -> np.ndarray:
    """Validate a 1-D sequence of per-token numbers without NaN; return float64."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{name} must be a sequence of numbers: {error}") from error
    if array.ndim != 1:
        raise ConfigurationError(f"{name} must be 1-D (one value per token), got {array.shape}")
    if np.any(np.isnan(array)):
        raise ConfigurationError(f"{name} contains NaN")
    return array


def gnll(token_logprobs: Sequence[float]) -> float:
    """G-NLL: negative log-likelihood of the (greedy) answer, ``-Σ_t log p(token_t)``.

    Args:
        token_logprobs: natural-log probability of each generated token.

    Returns:
        The summed negative log-probability; 0.0 for no tokens. A token of
        log-probability ``-inf`` gives ``inf``.

    Raises:
        ConfigurationError: the input is not a 1-D sequence of numbers or has NaN.
    """
    logprobs = _as_token_values(token_logprobs, "token_logprobs")
    return float(-logprobs.sum()) if logprobs.size else 0.0


def max_token_nll(token_logprobs: Sequence[float]) -> float:
    """The reply's least likely token: ``max_t -log p(token_t)``.

    G-NLL sums over the tokens, so it grows with the reply's length; this
    reads one token, the one the model was least sure of (a name or number it
    guessed), whatever the length.

    Args:
        token_logprobs: natural-log probability of each generated token.

    Returns:
        The largest negative log-probability; 0.0 for no tokens.

    Raises:
        ConfigurationError: the input is not a 1-D sequence of numbers or has NaN.
    """
    logprobs = _as_token_values(token_logprobs, "token_logprobs")
    return float(-logprobs.min()) if logprobs.size else 0.0


def mean_token_entropy(token_entropies: Sequence[float]) -> float:
    """Mean of the per-token predictive entropies.

    Args:
        token_entropies: entropy of the model's next-token distribution at
            each generated position.

    Returns:
        Their mean; 0.0 for no tokens.

    Raises:
        ConfigurationError: the input is not a 1-D sequence of numbers or has NaN.
    """
    entropies = _as_token_values(token_entropies, "token_entropies")
    return float(entropies.mean()) if entropies.size else 0.0


def entropy_area_score(token_entropies: Sequence[float]) -> float:
    """Entropy Area Score: the area under the per-token entropy curve over its length.

    The curve joins the points ``(t, H_t)`` for positions ``t = 0 .. T-1`` by
    straight lines; its area (trapezoid rule, unit spacing) is divided by its
    length ``T - 1``, i.e. the score is the curve's mean height. Compared with
    :func:`mean_token_entropy` the first and last tokens count half, so a
    single uncertain token at an end weighs less than one in the middle.

    The EAS paper computes its entropies at probe contexts built with the
    reference answer; without labels we apply the same area-under-the-curve
    reduction to the entropies of the generated tokens.

    Args:
        token_entropies: entropy at each generated position.

    Returns:
        The normalised area; ``H_0`` for a single token (a curve of one point
        has that height) and 0.0 for no tokens.

    Raises:
        ConfigurationError: the input is not a 1-D sequence of numbers or has NaN.
    """
    entropies = _as_token_values(token_entropies, "token_entropies")
    if entropies.size == 0:
        return 0.0
    if entropies.size == 1:
        return float(entropies[0])
    area = float(((entropies[1:] + entropies[:-1]) / 2.0).sum())
    return area / (entropies.size - 1)
