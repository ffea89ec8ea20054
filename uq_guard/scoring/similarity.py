"""Similarity matrices between texts, from their embeddings (ALGORITHMS §2, step 2).

Two built-in similarities map a cosine in ``[-1, 1]`` to a weight in ``[0, 1]``:

* ``"shifted_cosine"``: ``(1 + cos) / 2`` — the Inv-Entropy paper's definition;
* ``"abs_cosine"``: ``|cos|`` — what the authors' released package computes.

A user may also supply any callable that returns a similarity matrix;
:func:`check_similarity_matrix` validates what it returns before the scorers
see it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from uq_guard._exceptions import ConfigurationError

__all__ = [
    "SIMILARITIES",
    "check_similarity_matrix",
    "cosine_matrix",
    "similarity_matrix",
    "similarity_of_cosine",
]

SIMILARITIES: Final = ("shifted_cosine", "abs_cosine")
"""The names :func:`similarity_matrix` accepts for ``kind``."""

_SYMMETRY_ATOL: Final = 1e-6
_DIAGONAL_ATOL: Final = 1e-6


def _as_float_array(values: ArrayLike, name: str) -> np.ndarray:
    """Convert ``values`` to a float64 array, or raise ConfigurationError naming ``name``."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{name} is not a numeric array: {error}") from error


def _as_square_matrix(matrix: ArrayLike, name: str, *, non_negative: bool = False) -> np.ndarray:
    """Validate a square, finite, non-empty matrix and return it as a float64 copy.

    Args:
        matrix: the array-like to check.
        name: how error messages call the argument.
        non_negative: also require every entry to be ``>= 0``.

    Returns:
        A new ``(n, n)`` float64 array.

    Raises:
        ConfigurationError: the message names ``name`` and the failed check.
    """
    array = _as_float_array(matrix, name)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigurationError(f"{name} must be a square 2-D matrix, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ConfigurationError(f"{name} is empty: need at least one item")
    if not np.all(np.isfinite(array)):
        raise ConfigurationError(f"{name} has non-finite entries (NaN or inf)")
    if non_negative and np.any(array < 0):
        raise ConfigurationError(f"{name} has negative entries; similarities must be >= 0")
    return array


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm; a zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _as_embedding_rows(embeddings: ArrayLike, name: str) -> np.ndarray:
    """Validate a finite ``(n, d)`` embedding matrix and return it as float64."""
    array = _as_float_array(embeddings, name)
    if array.ndim != 2:
        raise ConfigurationError(
            f"{name} must be a 2-D (n_texts, dim) array, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigurationError(f"{name} has non-finite entries (NaN or inf)")
    return array


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity between the rows of ``a`` and the rows of ``b``.

    Rows may have any norm; they are normalised here. A zero row has cosine 0
    with everything (itself included), instead of a NaN.

    Args:
        a: ``(n, d)`` embeddings.
        b: ``(m, d)`` embeddings; ``None`` compares ``a`` with itself.

    Returns:
        The ``(n, m)`` matrix of cosines, clipped to ``[-1, 1]``.

    Raises:
        ConfigurationError: an input is not 2-D, not finite, or the dimensions differ.
    """
    left = _unit_rows(_as_embedding_rows(a, "a"))
    right = left if b is None else _unit_rows(_as_embedding_rows(b, "b"))
    if left.shape[1] != right.shape[1]:
        raise ConfigurationError(
            f"embedding dimensions differ: a has {left.shape[1]}, b has {right.shape[1]}"
        )
    return np.clip(left @ right.T, -1.0, 1.0)


def similarity_of_cosine(cosine: np.ndarray, kind: str) -> np.ndarray:
    """ALGORITHMS §2 step 2: ``(1 + cos) / 2`` for ``shifted_cosine``, ``|cos|`` for ``abs_cosine``.

    The one place the named similarities are defined; GAAP's fitness and the
    scorers' matrices both go through it.
    """
    if kind not in SIMILARITIES:
        raise ConfigurationError(
            f"unknown similarity kind {kind!r}; allowed values: {', '.join(SIMILARITIES)}"
        )
    return (1.0 + cosine) / 2.0 if kind == "shifted_cosine" else np.abs(cosine)


def similarity_matrix(embeddings: np.ndarray, kind: str) -> np.ndarray:
    """Pairwise similarity of texts from their embeddings.

    Args:
        embeddings: ``(n, d)`` embeddings, one row per text (any norm).
        kind: one of :data:`SIMILARITIES`: ``"shifted_cosine"`` gives
            ``(1 + cos) / 2``, ``"abs_cosine"`` gives ``|cos|``.

    Returns:
        A symmetric ``(n, n)`` matrix with entries in ``[0, 1]`` and a
        diagonal of exactly 1 (a text is fully similar to itself, even when
        its embedding is the zero vector).

    Raises:
        ConfigurationError: ``kind`` is unknown or the embeddings are invalid.
    """
    similarity = similarity_of_cosine(cosine_matrix(embeddings), kind)
    # Rounding in the matrix product can leave a tiny asymmetry; remove it exactly.
    similarity = np.clip((similarity + similarity.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(similarity, 1.0)
    return similarity


def check_similarity_matrix(matrix: ArrayLike, n: int, name: str) -> np.ndarray:
    """Validate the output of a user-supplied similarity callable.

    Checks, in order: shape ``(n, n)``, finite, symmetric (atol 1e-6),
    non-negative, unit diagonal (atol 1e-6).

    Args:
        matrix: what the callable returned.
        n: the number of texts it was given.
        name: the name of the callable or option, used in error messages.

    Returns:
        The matrix as a float64 array (values unchanged).

    Raises:
        ConfigurationError: the message names ``name`` and the check that failed.
    """
    array = _as_float_array(matrix, f"similarity {name!r}")
    if array.shape != (n, n):
        raise ConfigurationError(
            f"similarity {name!r} returned shape {array.shape}; expected ({n}, {n})"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigurationError(f"similarity {name!r} returned non-finite entries (NaN or inf)")
    asymmetry = float(np.max(np.abs(array - array.T))) if n else 0.0
    if asymmetry > _SYMMETRY_ATOL:
        raise ConfigurationError(
            f"similarity {name!r} returned a matrix that is not symmetric "
            f"(max |S - S.T| = {asymmetry:.3g})"
        )
    if np.any(array < 0):
        raise ConfigurationError(
            f"similarity {name!r} returned negative entries (min {float(array.min()):.3g}); "
            "similarities must be >= 0"
        )
    diagonal_error = float(np.max(np.abs(np.diag(array) - 1.0))) if n else 0.0
    if diagonal_error > _DIAGONAL_ATOL:
        raise ConfigurationError(
            f"similarity {name!r} returned a diagonal that is not 1 "
            f"(max |diag - 1| = {diagonal_error:.3g})"
        )
    return array
