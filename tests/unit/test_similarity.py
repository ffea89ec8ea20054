"""Similarity matrices from embeddings, and the check of user-supplied matrices."""

from __future__ import annotations

import numpy as np
import pytest

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring import (
    SIMILARITIES,
    check_similarity_matrix,
    cosine_matrix,
    similarity_matrix,
)

# Rows: e1, 3·e1 (same direction, other norm), e2 (orthogonal), -e1 (opposite).
KNOWN = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])


def test_similarities_names() -> None:
    assert SIMILARITIES == ("shifted_cosine", "abs_cosine")


def test_cosine_of_known_pairs_ignores_norm() -> None:
    cosine = cosine_matrix(KNOWN)

    assert cosine[0, 1] == pytest.approx(1.0)
    assert cosine[0, 2] == pytest.approx(0.0)
    assert cosine[0, 3] == pytest.approx(-1.0)


def test_cosine_between_two_sets() -> None:
    cosine = cosine_matrix(KNOWN[:2], KNOWN[2:])

    assert cosine.shape == (2, 2)
    assert np.allclose(cosine, [[0.0, -1.0], [0.0, -1.0]])


def test_cosine_with_a_zero_vector_is_zero_not_nan() -> None:
    cosine = cosine_matrix(np.array([[0.0, 0.0], [1.0, 1.0]]))

    assert not np.any(np.isnan(cosine))
    assert cosine[0, 0] == 0.0
    assert cosine[0, 1] == 0.0


def test_cosine_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ConfigurationError, match="embedding dimensions differ"):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))


def test_cosine_rejects_one_dimensional_input() -> None:
    with pytest.raises(ConfigurationError, match="a must be a 2-D"):
        cosine_matrix(np.ones(3))


def test_cosine_rejects_non_finite_input() -> None:
    with pytest.raises(ConfigurationError, match="b has non-finite"):
        cosine_matrix(np.ones((2, 2)), np.array([[np.nan, 1.0]]))


def test_shifted_cosine_of_known_pairs() -> None:
    sim = similarity_matrix(KNOWN, "shifted_cosine")

    assert sim[0, 1] == pytest.approx(1.0)  # identical direction
    assert sim[0, 2] == pytest.approx(0.5)  # orthogonal
    assert sim[0, 3] == pytest.approx(0.0)  # opposite


def test_abs_cosine_of_known_pairs() -> None:
    sim = similarity_matrix(KNOWN, "abs_cosine")

    assert sim[0, 1] == pytest.approx(1.0)
    assert sim[0, 2] == pytest.approx(0.0)
    assert sim[0, 3] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_similarity_matrix_is_a_valid_similarity(kind: str) -> None:
    rng = np.random.default_rng(0)
    embeddings = np.vstack([rng.normal(size=(7, 16)), np.zeros((1, 16))])

    sim = similarity_matrix(embeddings, kind)

    assert sim.shape == (8, 8)
    assert np.array_equal(sim, sim.T)
    assert np.all(np.diag(sim) == 1.0)  # exactly, the zero vector included
    assert sim.min() >= 0.0
    assert sim.max() <= 1.0
    assert check_similarity_matrix(sim, 8, kind) is not None


def test_similarity_matrix_rejects_an_unknown_kind() -> None:
    with pytest.raises(ConfigurationError, match="allowed values: shifted_cosine, abs_cosine"):
        similarity_matrix(KNOWN, "entailment_typo")


def test_check_accepts_a_valid_matrix_within_tolerance() -> None:
    matrix = [[1.0, 0.3], [0.3 + 1e-8, 1.0 - 1e-8]]

    checked = check_similarity_matrix(matrix, 2, "my_sim")

    assert checked.dtype == np.float64
    assert np.array_equal(checked, np.array(matrix))


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.eye(3), r"'my_sim' returned shape \(3, 3\); expected \(2, 2\)"),
        (np.ones(2), r"'my_sim' returned shape \(2,\)"),
        ([[1.0, np.nan], [np.nan, 1.0]], "'my_sim' returned non-finite"),
        ([[1.0, np.inf], [np.inf, 1.0]], "'my_sim' returned non-finite"),
        ([[1.0, 0.2], [0.3, 1.0]], "'my_sim' returned a matrix that is not symmetric"),
        ([[1.0, -0.2], [-0.2, 1.0]], "'my_sim' returned negative entries"),
        ([[0.9, 0.2], [0.2, 1.0]], "'my_sim' returned a diagonal that is not 1"),
        ([["x", "y"], ["z", "w"]], "'my_sim' is not a numeric array"),
    ],
)
def test_check_rejects_each_bad_case_by_name(matrix: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        check_similarity_matrix(matrix, 2, "my_sim")
