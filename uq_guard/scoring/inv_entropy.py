"""Inv-Entropy: uncertainty from a dual random walk over prompts and answers.

This is ALGORITHMS.md §2 (steps 3–9), as pure numpy. Given ``S_X`` (similarity
of the prompts of the n flattened (prompt, answer) pairs) and ``S_Y``
(similarity of their answers):

* ``P_X = S_X / rowsum(S_X)``, ``P_Y = S_Y / rowsum(S_Y)``;
* ``Q = P_Y · P_X`` with ``Q[i, j] = p(x_j | y_i)``;
* ``p_y = uᵀ P_Y`` and ``p_x = uᵀ P_Y P_Y P_X`` with ``u = (1/n)·1``;
* ``H_inv = -Σ_i Q[i,i] ln Q[i,i]``.

Every measure is computed for a whole stack of matrices at once (shape
``(B, k, k)``), so the bootstrap of §2.7 is a handful of batched array
operations with no Python loop over draws or entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring.similarity import _as_square_matrix

__all__ = ["InvEntropyResult", "inv_entropy"]

_CONFIDENCE_EPS: Final = 1e-12


@dataclass(frozen=True)
class InvEntropyResult:
    """The Inv-Entropy measures of one guarded call.

    Attributes:
        inv_entropy: ``H_inv = -Σ_i Q[i,i] ln Q[i,i]`` (ALGORITHMS §2.6); higher
            means more uncertain.
        forward_entropy: ``-Σ_i R[i,i] ln R[i,i]`` with the Bayes-reversed
            ``R[i,j] = Q[i,j] p_y[i] / p_x[j]`` (§2.8).
        conditional_entropy: ``H(X|Y) = -Σ_i p_y[i] Σ_j Q[i,j] ln Q[i,j]`` (§2.8).
        max_output_mass: ``max_i p_y[i]``, a confidence (higher = more certain).
            The reference code calls it ``MAX-py-x``; this is what it computes.
        marginal_wasserstein: 1-D Wasserstein distance between the value lists
            ``p_x`` and ``p_y`` (``scipy.stats.wasserstein_distance(p_x, p_y)``).
        confidence: label-free confidence in ``[0, 1]`` (§2.9),
            ``clip(1 - (H_inv - h_same) / (h_apart - h_same), 0, 1)``. ``None``
            when ``|h_apart - h_same| < 1e-12``: then the answers cannot move
            Inv-Entropy at all (e.g. a single prompt, whose ``P_X`` is uniform),
            so it carries no information and another scorer must give the
            confidence.
        h_same: Inv-Entropy had every answer been the same (``S_Y`` all ones),
            through the same estimator and bootstrap draws.
        h_apart: Inv-Entropy had every answer been unrelated (``S_Y`` the
            identity, or ``unrelated_similarity`` off the diagonal), through
            the same estimator and bootstrap draws.
        n_pairs: the number n of (prompt, answer) pairs scored.
        n_groups: the number of prompts (groups); n when no groups were given.
        n_bootstrap: the bootstrap draws actually used; 0 means the plain value
            on the full matrices.
    """

    inv_entropy: float
    forward_entropy: float
    conditional_entropy: float
    max_output_mass: float
    marginal_wasserstein: float
    confidence: float | None
    h_same: float
    h_apart: float
    n_pairs: int
    n_groups: int
    n_bootstrap: int

    def as_scores(self) -> dict[str, float]:
        """The five measures of the probabilistic model, keyed by field name."""
        return {
            "inv_entropy": self.inv_entropy,
            "forward_entropy": self.forward_entropy,
            "conditional_entropy": self.conditional_entropy,
            "max_output_mass": self.max_output_mass,
            "marginal_wasserstein": self.marginal_wasserstein,
        }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0 wherever the denominator is 0."""
    numerator, denominator = np.broadcast_arrays(numerator, denominator)
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator != 0)


def _neg_xlogx(values: np.ndarray) -> np.ndarray:
    """Elementwise ``-v ln v`` with the convention ``0 ln 0 = 0``."""
    positive = values > 0
    return -values * np.log(np.where(positive, values, 1.0))


def _row_normalise(similarity: np.ndarray) -> np.ndarray:
    """Row-stochastic matrices from a stack of similarity matrices.

    A row of zeros (an item similar to nothing, itself included) stays zero:
    no walk leaves it, and it contributes nothing to the entropies.
    """
    return _safe_divide(similarity, similarity.sum(axis=-1, keepdims=True))


def _diagonal(stack: np.ndarray) -> np.ndarray:
    """Diagonals of a ``(B, k, k)`` stack as a ``(B, k)`` array."""
    return np.diagonal(stack, axis1=-2, axis2=-1)


def _inv_entropy_of_transitions(p_x: np.ndarray, p_y: np.ndarray) -> np.ndarray:
    """``-Σ_i Q[i,i] ln Q[i,i]`` with ``Q = P_Y P_X``, for each matrix of the stack."""
    return _neg_xlogx(_diagonal(p_y @ p_x)).sum(axis=-1)


def _batched_measures(
    sim_x: np.ndarray, sim_y: np.ndarray, unrelated_similarity: float = 0.0
) -> dict[str, np.ndarray]:
    """All §2 measures for a ``(B, k, k)`` stack of similarity pairs.

    Args:
        sim_x: ``(B, k, k)`` prompt similarities.
        sim_y: ``(B, k, k)`` answer similarities.
        unrelated_similarity: the off-diagonal of the "every answer unrelated"
            reference ``S_Y`` behind ``h_apart`` (0 gives ``S_Y = I``).

    Returns:
        Each measure of :meth:`InvEntropyResult.as_scores` plus ``h_same`` and
        ``h_apart``, as ``(B,)`` arrays.
    """
    size = sim_x.shape[-1]
    transition_x = _row_normalise(sim_x)
    transition_y = _row_normalise(sim_y)
    inverse = transition_y @ transition_x  # Q[b, i, j] = p(x_j | y_i)

    output_mass = transition_y.mean(axis=-2)  # p_y = uᵀ P_Y
    input_mass = ((output_mass[:, None, :] @ transition_y) @ transition_x)[:, 0, :]

    inverse_diagonal = _diagonal(inverse)
    forward_diagonal = _safe_divide(inverse_diagonal * output_mass, input_mass)
    row_entropies = _neg_xlogx(inverse).sum(axis=-1)
    wasserstein = np.abs(np.sort(input_mass, axis=-1) - np.sort(output_mass, axis=-1)).mean(axis=-1)

    # S_Y all ones gives a uniform P_Y; S_Y = I gives P_Y = I (so Q = P_X).
    uniform = np.full_like(transition_x, 1.0 / size)
    eye = np.eye(size)
    apart = _row_normalise((unrelated_similarity * (1.0 - eye) + eye)[None])
    return {
        "inv_entropy": _neg_xlogx(inverse_diagonal).sum(axis=-1),
        "forward_entropy": _neg_xlogx(forward_diagonal).sum(axis=-1),
        "conditional_entropy": (output_mass * row_entropies).sum(axis=-1),
        "max_output_mass": output_mass.max(axis=-1),
        "marginal_wasserstein": wasserstein,
        "h_same": _inv_entropy_of_transitions(transition_x, uniform),
        "h_apart": _inv_entropy_of_transitions(transition_x, apart),
    }


def _validate_groups(groups: ArrayLike | None, n: int) -> np.ndarray:
    """The group label of each pair as an int array (each pair alone when ``None``)."""
    if groups is None:
        return np.arange(n)
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ConfigurationError(
            f"groups must be a 1-D sequence of length {n} (one prompt index per pair), "
            f"got shape {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise ConfigurationError(
            f"groups must hold integer prompt indices, got dtype {labels.dtype}"
        )
    return labels.astype(np.int64)


def _validate_n_bootstrap(n_bootstrap: int) -> int:
    """Check that the number of bootstrap draws is a non-negative integer."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer):
        raise ConfigurationError(
            f"n_bootstrap must be an integer >= 0, got {type(n_bootstrap).__name__}"
        )
    if n_bootstrap < 0:
        raise ConfigurationError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    return int(n_bootstrap)


def _draw_indices(groups: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Draw bootstrap index sets that keep exactly one pair from each group.

    Draws are independent, so two of them may coincide (never a loop hunting
    for distinct tuples, which cannot end when fewer exist than draws). Groups
    may have unequal sizes. Columns follow the sorted group labels.

    Args:
        groups: ``(n,)`` integer group label of each pair.
        n_bootstrap: the number of draws B.
        rng: the one seeded generator of the call.

    Returns:
        A ``(B, G)`` int array: row b holds the pair index kept from each of
        the G groups in draw b.
    """
    _, group_of_pair, group_sizes = np.unique(groups, return_inverse=True, return_counts=True)
    pairs_by_group = np.argsort(group_of_pair.ravel(), kind="stable")
    group_starts = np.concatenate(([0], np.cumsum(group_sizes)[:-1]))
    offsets = rng.integers(0, group_sizes, size=(n_bootstrap, group_sizes.size))
    return pairs_by_group[group_starts + offsets]


def _confidence(h_inv: float, h_same: float, h_apart: float) -> float | None:
    """§2.9: where ``h_inv`` lies between the all-same and all-apart extremes."""
    span = h_apart - h_same
    if abs(span) < _CONFIDENCE_EPS:
        return None
    return float(np.clip(1.0 - (h_inv - h_same) / span, 0.0, 1.0))


def inv_entropy(
    sim_x: ArrayLike,
    sim_y: ArrayLike,
    groups: ArrayLike | None = None,
    n_bootstrap: int = 0,
    seed: int | None = 0,
    unrelated_similarity: float = 0.0,
) -> InvEntropyResult:
    """Inv-Entropy and its companion measures (ALGORITHMS §2).

    Args:
        sim_x: ``(n, n)`` similarity of the prompts of the n flattened
            (prompt, answer) pairs; square, finite, non-negative.
        sim_y: ``(n, n)`` similarity of their answers; same requirements.
        groups: length-n integer prompt index of each pair; the pairs of one
            prompt form a group, and groups may differ in size (failed samples
            are dropped). ``None`` makes every pair its own group, so the
            bootstrap has nothing to resample and the plain value is returned.
        n_bootstrap: the number B of bootstrap draws (§2.7; the paper uses 30).
            Each draw keeps exactly one pair per group; the measures are
            computed on the ``(G, G)`` sub-matrices and averaged over draws.
            0 gives the plain value on the full matrices, and so does any B
            when every group holds a single pair (no drawing then).
        seed: seed of the one ``numpy.random.Generator`` the draws come from;
            the same inputs and seed give the same result (``None`` takes fresh
            entropy from the OS and is not reproducible).
        unrelated_similarity: the similarity two unrelated answers get under
            the measure that built ``sim_y``, used for the "every answer
            unrelated" reference ``h_apart`` of the confidence (§2.9). The
            default 0 is §2.9's ``S_Y = I``, right for ``abs_cosine`` and
            entailment; under ``shifted_cosine`` unrelated answers (cosine 0)
            score 0.5, and the identity would be answers that *contradict*
            each other (cosine -1), which compresses every real confidence
            towards 1. The engine passes 0.5 for ``shifted_cosine``.

    Returns:
        An :class:`InvEntropyResult`. Degenerate inputs (one pair, identical
        answers, two pairs) give numbers, never NaN; entries divided by zero
        mass (an all-zero row) count as 0, and ``0 ln 0 = 0``.

    Raises:
        ConfigurationError: a matrix is not square, the shapes differ, an entry
            is non-finite or negative, ``groups`` does not match, or
            ``n_bootstrap`` is negative.
    """
    prompts = _as_square_matrix(sim_x, "sim_x", non_negative=True)
    answers = _as_square_matrix(sim_y, "sim_y", non_negative=True)
    if prompts.shape != answers.shape:
        raise ConfigurationError(
            f"sim_x and sim_y must have the same shape, got {prompts.shape} and {answers.shape}"
        )
    n_pairs = prompts.shape[0]
    labels = _validate_groups(groups, n_pairs)
    draws = _validate_n_bootstrap(n_bootstrap)
    n_groups = int(np.unique(labels).size)

    if draws == 0 or n_groups == n_pairs:
        draws = 0
        prompt_stack, answer_stack = prompts[None], answers[None]
    else:
        rng = np.random.default_rng(seed)
        kept = _draw_indices(labels, draws, rng)
        rows, cols = kept[:, :, None], kept[:, None, :]
        prompt_stack, answer_stack = prompts[rows, cols], answers[rows, cols]

    if not 0.0 <= unrelated_similarity < 1.0:
        raise ConfigurationError(
            f"unrelated_similarity must be in [0, 1), got {unrelated_similarity!r}"
        )
    measures = _batched_measures(prompt_stack, answer_stack, unrelated_similarity)
    means = {name: float(values.mean()) for name, values in measures.items()}
    return InvEntropyResult(
        inv_entropy=means["inv_entropy"],
        forward_entropy=means["forward_entropy"],
        conditional_entropy=means["conditional_entropy"],
        max_output_mass=means["max_output_mass"],
        marginal_wasserstein=means["marginal_wasserstein"],
        confidence=_confidence(means["inv_entropy"], means["h_same"], means["h_apart"]),
        h_same=means["h_same"],
        h_apart=means["h_apart"],
        n_pairs=n_pairs,
        n_groups=n_groups,
        n_bootstrap=draws,
    )
