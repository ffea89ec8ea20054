"""Sample-only uncertainty scorers (ALGORITHMS §4).

* Degree, EigV and Eccentricity of the answer similarity graph (Lin et al.
  2023, "Generating with Confidence");
* semantic entropy over single-link clusters of the answers (Kuhn et al. 2023,
  with embedding similarity standing in for bidirectional entailment);
* Semantic Volume of the answer embeddings (Li et al. 2025).

Every scorer returns an *uncertainty* (higher = less sure) as a plain float,
never NaN, and is defined for a single answer. :func:`support` is not a
scorer: it ranks answers for the best-of policy. :func:`agreement_confidence`
is not one either: it puts the answers' agreement on the label-free
confidence scale of ALGORITHMS §2.9 ("One scale"), for the sample-only path.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring.similarity import _as_embedding_rows, _as_square_matrix, _unit_rows

__all__ = [
    "agreement_confidence",
    "degree_uncertainty",
    "eccentricity_uncertainty",
    "eigv_uncertainty",
    "semantic_entropy",
    "semantic_volume",
    "support",
]


def _graph_laplacian(sim: ArrayLike) -> np.ndarray:
    """Symmetric normalised Laplacian ``L = I - D^-1/2 W D^-1/2`` of ``W = (S + Sᵀ)/2``.

    A node of degree 0 gets ``D^-1/2 = 0`` (so its row of ``L`` is that of ``I``).
    """
    weights = _as_square_matrix(sim, "sim", non_negative=True)
    weights = (weights + weights.T) / 2.0
    degrees = weights.sum(axis=1)
    inv_sqrt_degrees = np.divide(
        1.0, np.sqrt(degrees), out=np.zeros_like(degrees), where=degrees > 0
    )
    normalised = inv_sqrt_degrees[:, None] * weights * inv_sqrt_degrees[None, :]
    laplacian = np.eye(weights.shape[0]) - normalised
    return (laplacian + laplacian.T) / 2.0


def degree_uncertainty(sim: np.ndarray) -> float:
    """Degree uncertainty ``U_Deg = trace(mI - D) / m² = 1 - mean(W)`` (Lin et al.).

    Args:
        sim: ``(m, m)`` non-negative similarity of m answers, unit diagonal
            expected (the diagonal is included in the mean, as in the paper).

    Returns:
        0 when every answer is fully similar to every other; ``1 - 1/m`` when
        the answers are unrelated (``W = I``). 0 for one answer.

    Raises:
        ConfigurationError: ``sim`` is not a square, finite, non-negative matrix.
    """
    weights = _as_square_matrix(sim, "sim", non_negative=True)
    return float(1.0 - weights.mean())


def agreement_confidence(sim: np.ndarray, unrelated_similarity: float = 0.0) -> float | None:
    """Label-free confidence from how much m answers agree (ALGORITHMS §2.9, "One scale").

    ``clip((s̄ - u) / (1 - u), 0, 1)``, with ``s̄`` the mean off-diagonal
    similarity (every pair of distinct answers, the diagonal left out) and
    ``u`` the similarity two unrelated answers get. So "every answer the
    same" gives 1 and "every answer unrelated" gives 0, the two ends of
    Inv-Entropy's label-free confidence, and one threshold means one thing
    on both paths. For a fixed m, ``s̄`` is an affine map of Degree
    (``1 - U_Deg = 1/m + (1 - 1/m)·s̄``), so the two rank calls alike.

    Args:
        sim: ``(m, m)`` similarity of m answers, unit diagonal expected.
        unrelated_similarity: ``u``, in ``[0, 1)``: 0.5 for
            ``shifted_cosine``, 0 for ``abs_cosine`` and a user callable.

    Returns:
        The confidence in ``[0, 1]``, or None for a single answer (no pair
        to compare).

    Raises:
        ConfigurationError: ``sim`` is not a square, finite, non-negative
            matrix, or ``unrelated_similarity`` is outside ``[0, 1)``.
    """
    if not 0.0 <= unrelated_similarity < 1.0:
        raise ConfigurationError(
            f"unrelated_similarity must be in [0, 1), got {unrelated_similarity}"
        )
    weights = _as_square_matrix(sim, "sim", non_negative=True)
    count = weights.shape[0]
    if count < 2:
        return None
    mean_pair = (weights.sum() - np.trace(weights)) / (count * (count - 1))
    scaled = (mean_pair - unrelated_similarity) / (1.0 - unrelated_similarity)
    return float(np.clip(scaled, 0.0, 1.0))


def eigv_uncertainty(sim: np.ndarray) -> float:
    """EigV uncertainty ``Σ_k max(0, 1 - λ_k)`` over the eigenvalues of ``L`` (Lin et al.).

    ``L = I - D^-1/2 W D^-1/2`` with ``W`` the symmetrised similarity. The
    value estimates the number of semantically distinct answers.

    Args:
        sim: ``(m, m)`` non-negative similarity of m answers.

    Returns:
        1 when all answers are identical (the minimum for a connected graph);
        m when they are mutually unrelated (``W = I``). 1 for one answer.

    Raises:
        ConfigurationError: ``sim`` is not a square, finite, non-negative matrix.
    """
    eigenvalues = np.linalg.eigvalsh(_graph_laplacian(sim))
    return float(np.clip(1.0 - eigenvalues, 0.0, None).sum())


def eccentricity_uncertainty(sim: np.ndarray, eig_threshold: float = 0.9) -> float:
    """Eccentricity uncertainty from the spectral embedding of the answers (Lin et al.).

    Takes the eigenvectors of ``L`` for its ``k = max(1, #{λ < eig_threshold})``
    smallest eigenvalues as columns; row j is the embedding ``v_j`` of answer
    j. The rows are centred on their mean and the score is the Frobenius norm
    of the centred matrix (the spread of the answers around their centre).

    Args:
        sim: ``(m, m)`` non-negative similarity of m answers.
        eig_threshold: eigenvalues of ``L`` below it select the eigenvectors.

    Returns:
        0 when all answers are identical (or there is one answer);
        ``sqrt(m - 1)`` when they are mutually unrelated.

    Raises:
        ConfigurationError: ``sim`` is not a square, finite, non-negative matrix.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(_graph_laplacian(sim))
    k = max(1, int(np.count_nonzero(eigenvalues < eig_threshold)))
    spectral_rows = eigenvectors[:, :k]
    centred = spectral_rows - spectral_rows.mean(axis=0, keepdims=True)
    return float(np.linalg.norm(centred))


def semantic_entropy(cosine: np.ndarray, threshold: float) -> float:
    """Entropy (natural log) of the sizes of single-link clusters of the answers.

    Two answers are linked when their cosine (or any similarity) is
    ``>= threshold``; clusters are the connected components of that graph, so
    a chain of close answers forms one cluster (single link).

    Args:
        cosine: ``(m, m)`` similarity of m answers (negative values allowed).
        threshold: the link threshold.

    Returns:
        ``-Σ_c p_c ln p_c`` with ``p_c`` the share of answers in cluster c:
        0 for one cluster (or one answer), ``ln m`` when no two answers link.

    Raises:
        ConfigurationError: ``cosine`` is not a square, finite matrix.
    """
    shares = _cluster_shares(cosine, threshold)
    return float(-(shares * np.log(shares)).sum())


def largest_cluster_share(cosine: np.ndarray, threshold: float) -> float:
    """Share of the answers in the biggest single-link cluster; 1.0 when all agree.

    The clusters are those of :func:`semantic_entropy`.

    Args:
        cosine: ``(m, m)`` similarity of m >= 1 answers.
        threshold: the link threshold.

    Raises:
        ConfigurationError: ``cosine`` is not a square, finite matrix.
    """
    return float(_cluster_shares(cosine, threshold).max())


def _cluster_shares(cosine: np.ndarray, threshold: float) -> np.ndarray:
    similarity = _as_square_matrix(cosine, "cosine")
    links = csr_matrix(similarity >= threshold)
    _, cluster_of_answer = connected_components(links, directed=False)
    return np.bincount(cluster_of_answer) / cluster_of_answer.size


def semantic_volume(embeddings: np.ndarray, ridge: float = 1e-3) -> float:
    """Semantic Volume: ``log det(G + ridge·I)`` of the answers' Gram matrix (Li et al.).

    ``G = E Eᵀ`` for the unit-normalised embedding rows ``E`` (a zero row stays
    zero). ALGORITHMS §4 writes "−log-det", but also requires every scorer to
    return an uncertainty: answers that spread over more directions span a
    bigger volume and are the more uncertain case, so this returns
    ``+log det`` (computed with ``slogdet``) — higher means less sure.

    Args:
        embeddings: ``(m, d)`` answer (or prompt) embeddings, any norm.
        ridge: added to the diagonal so that the determinant of a rank-deficient
            Gram matrix stays finite; must be > 0.

    Returns:
        ``m·ln(1 + ridge)`` for mutually orthogonal answers;
        ``ln(m + ridge) + (m - 1)·ln(ridge)`` (strongly negative) for identical
        ones; ``ln(1 + ridge)`` for one answer.

    Raises:
        ConfigurationError: the embeddings are not a finite, non-empty 2-D array,
            or ``ridge`` is not a positive finite number.
    """
    if not np.isfinite(ridge) or ridge <= 0:
        raise ConfigurationError(f"ridge must be a positive finite number, got {ridge}")
    rows = _unit_rows(_as_embedding_rows(embeddings, "embeddings"))
    if rows.shape[0] == 0:
        raise ConfigurationError("embeddings is empty: need at least one answer")
    gram = rows @ rows.T
    _, log_determinant = np.linalg.slogdet(gram + ridge * np.eye(rows.shape[0]))
    return float(log_determinant)


def support(sim: np.ndarray) -> np.ndarray:
    """Mean similarity of each item to the *other* items (its row mean without itself).

    Used by the best-of policy to pick the answer most agreed with.

    Args:
        sim: ``(m, m)`` similarity matrix.

    Returns:
        A ``(m,)`` float array; ``[1.0]`` for a single item (it agrees with
        itself).

    Raises:
        ConfigurationError: ``sim`` is not a square, finite matrix.
    """
    similarity = _as_square_matrix(sim, "sim")
    count = similarity.shape[0]
    if count == 1:
        return np.ones(1)
    return (similarity.sum(axis=1) - np.diag(similarity)) / (count - 1)
