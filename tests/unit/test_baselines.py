"""Sample-only scorers: Degree, EigV, Eccentricity, semantic entropy, Semantic Volume, support."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring import (
    degree_uncertainty,
    eccentricity_uncertainty,
    eigv_uncertainty,
    semantic_entropy,
    semantic_volume,
    support,
)
from uq_guard.scoring.baselines import agreement_confidence

GRAPH_SCORERS = (degree_uncertainty, eigv_uncertainty, eccentricity_uncertainty)


def equicorrelated(m: int, off_diagonal: float) -> np.ndarray:
    """m answers, every pair with the same similarity."""
    sim = np.full((m, m), off_diagonal)
    np.fill_diagonal(sim, 1.0)
    return sim


@pytest.mark.parametrize("m", [2, 3, 5, 10])
def test_identical_answers_have_the_lowest_uncertainty(m: int) -> None:
    same = np.ones((m, m))

    assert degree_uncertainty(same) == pytest.approx(0.0, abs=1e-12)
    assert eigv_uncertainty(same) == pytest.approx(1.0, abs=1e-9)  # one semantic set
    assert eccentricity_uncertainty(same) == pytest.approx(0.0, abs=1e-9)
    assert semantic_entropy(same, threshold=0.9) == 0.0


@pytest.mark.parametrize("m", [2, 3, 5, 10])
def test_unrelated_answers_have_the_highest_uncertainty(m: int) -> None:
    apart = np.eye(m)

    assert degree_uncertainty(apart) == pytest.approx(1.0 - 1.0 / m, abs=1e-12)
    assert eigv_uncertainty(apart) == pytest.approx(m, abs=1e-9)  # m semantic sets
    assert eccentricity_uncertainty(apart) == pytest.approx(math.sqrt(m - 1), abs=1e-9)
    assert semantic_entropy(apart, threshold=0.9) == pytest.approx(math.log(m), abs=1e-12)


def test_graph_scores_rise_as_three_answers_drift_apart() -> None:
    agreement = [1.0, 0.9, 0.7, 0.5, 0.2, 0.0]

    degree = [degree_uncertainty(equicorrelated(3, a)) for a in agreement]
    eigv = [eigv_uncertainty(equicorrelated(3, a)) for a in agreement]
    eccentricity = [eccentricity_uncertainty(equicorrelated(3, a)) for a in agreement]

    assert all(low < high for low, high in itertools.pairwise(degree))
    assert all(low < high for low, high in itertools.pairwise(eigv))
    assert all(low <= high + 1e-12 for low, high in itertools.pairwise(eccentricity))
    assert eccentricity[0] < eccentricity[-1]


def test_eigv_closed_form_for_three_equicorrelated_answers() -> None:
    # W = (1-a)I + a·11ᵀ: L has eigenvalues 0 and 3a/(1+2a) (twice),
    # so U_EigV = 1 + 2·(1-a)/(1+2a).
    a = 0.4

    assert eigv_uncertainty(equicorrelated(3, a)) == pytest.approx(1 + 2 * (1 - a) / (1 + 2 * a))


def test_eigv_and_eccentricity_symmetrise_their_input() -> None:
    rng = np.random.default_rng(0)
    sim = rng.random((5, 5))
    np.fill_diagonal(sim, 1.0)
    symmetric = (sim + sim.T) / 2

    assert eigv_uncertainty(sim) == pytest.approx(eigv_uncertainty(symmetric))
    assert eccentricity_uncertainty(sim) == pytest.approx(eccentricity_uncertainty(symmetric))


def test_eccentricity_threshold_selects_the_eigenvectors() -> None:
    # Two tight pairs, weakly linked: L has two small eigenvalues, then two large.
    sim = np.array(
        [
            [1.0, 0.95, 0.05, 0.05],
            [0.95, 1.0, 0.05, 0.05],
            [0.05, 0.05, 1.0, 0.95],
            [0.05, 0.05, 0.95, 1.0],
        ]
    )

    one_vector = eccentricity_uncertainty(sim, eig_threshold=1e-9)
    two_vectors = eccentricity_uncertainty(sim, eig_threshold=0.5)

    assert one_vector == pytest.approx(0.0, abs=1e-9)  # the constant eigenvector only
    assert two_vectors > 0.5


def test_semantic_entropy_of_clusters() -> None:
    two_and_one = np.array([[1.0, 0.95, 0.1], [0.95, 1.0, 0.1], [0.1, 0.1, 1.0]])

    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert semantic_entropy(two_and_one, threshold=0.9) == pytest.approx(expected)


def test_semantic_entropy_links_chains_single_link() -> None:
    # 0~1 and 1~2 link, 0 and 2 do not: single link puts all three in one cluster.
    chain = np.array([[1.0, 0.92, 0.5], [0.92, 1.0, 0.92], [0.5, 0.92, 1.0]])

    assert semantic_entropy(chain, threshold=0.9) == 0.0


def test_semantic_entropy_accepts_negative_cosines() -> None:
    cosine = np.array([[1.0, -0.5], [-0.5, 1.0]])

    assert semantic_entropy(cosine, threshold=0.8) == pytest.approx(math.log(2))


def test_semantic_volume_is_larger_for_spread_answers() -> None:
    rng = np.random.default_rng(1)
    direction = rng.normal(size=16)
    identical = np.tile(direction, (5, 1)) * rng.uniform(0.5, 2.0, size=(5, 1))
    spread = rng.normal(size=(5, 16))

    assert semantic_volume(spread) > semantic_volume(identical)


def test_semantic_volume_closed_forms() -> None:
    ridge = 1e-3
    m = 4

    orthogonal = semantic_volume(np.eye(m) * 3.0, ridge=ridge)
    identical = semantic_volume(np.ones((m, 2)), ridge=ridge)

    assert orthogonal == pytest.approx(m * math.log(1 + ridge))
    assert identical == pytest.approx(math.log(m + ridge) + (m - 1) * math.log(ridge))


def test_semantic_volume_zero_vector_stays_finite() -> None:
    assert math.isfinite(semantic_volume(np.array([[0.0, 0.0], [1.0, 0.0]])))


@pytest.mark.parametrize("ridge", [0.0, -1.0, float("nan"), float("inf")])
def test_semantic_volume_rejects_a_bad_ridge(ridge: float) -> None:
    with pytest.raises(ConfigurationError, match="ridge must be a positive"):
        semantic_volume(np.eye(2), ridge=ridge)


def test_semantic_volume_rejects_no_answers() -> None:
    with pytest.raises(ConfigurationError, match="embeddings is empty"):
        semantic_volume(np.zeros((0, 4)))


def test_every_scorer_is_defined_for_one_answer() -> None:
    one = np.array([[1.0]])

    assert degree_uncertainty(one) == 0.0
    assert eigv_uncertainty(one) == pytest.approx(1.0)
    assert eccentricity_uncertainty(one) == 0.0
    assert semantic_entropy(one, threshold=0.9) == 0.0
    assert semantic_volume(np.array([[0.3, 0.4]]), ridge=1e-3) == pytest.approx(math.log(1.001))
    assert support(one).tolist() == [1.0]


@pytest.mark.parametrize("scorer", GRAPH_SCORERS)
def test_graph_scorers_give_numbers_without_self_similarity(scorer: object) -> None:
    value = scorer(np.zeros((3, 3)))  # type: ignore[operator]

    assert math.isfinite(value)


@pytest.mark.parametrize("scorer", GRAPH_SCORERS)
def test_graph_scorers_return_plain_floats(scorer: object) -> None:
    assert type(scorer(equicorrelated(3, 0.5))) is float  # type: ignore[operator]


def test_support_is_the_mean_similarity_to_the_others() -> None:
    sim = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.2], [0.6, 0.2, 1.0]])

    assert support(sim) == pytest.approx([0.7, 0.5, 0.4])
    assert int(np.argmax(support(sim))) == 0  # best-of picks the consensus answer


@pytest.mark.parametrize(
    ("scorer", "matrix", "match"),
    [
        (degree_uncertainty, np.ones((2, 3)), "sim must be a square"),
        (eigv_uncertainty, np.array([[1.0, np.nan], [np.nan, 1.0]]), "sim has non-finite"),
        (eccentricity_uncertainty, np.array([[1.0, -0.1], [-0.1, 1.0]]), "sim has negative"),
        (degree_uncertainty, np.zeros((0, 0)), "sim is empty"),
        (support, np.ones(3), "sim must be a square"),
    ],
)
def test_invalid_similarity_is_named(scorer: object, matrix: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        scorer(matrix)  # type: ignore[operator]


def test_semantic_entropy_rejects_a_non_square_matrix() -> None:
    with pytest.raises(ConfigurationError, match="cosine must be a square"):
        semantic_entropy(np.ones((2, 3)), threshold=0.5)


# -- agreement_confidence: the sample-only path on the label-free scale (§2.9 "One scale") --


@pytest.mark.parametrize("m", [2, 3, 6])
@pytest.mark.parametrize("unrelated", [0.0, 0.5])
def test_agreement_confidence_spans_zero_to_one(m: int, unrelated: float) -> None:
    assert agreement_confidence(np.ones((m, m)), unrelated) == pytest.approx(1.0)
    assert agreement_confidence(equicorrelated(m, unrelated), unrelated) == pytest.approx(0.0)


def test_agreement_confidence_can_fall_under_one_half_unlike_one_minus_degree() -> None:
    # shifted cosine of unrelated answers is 0.5: 1 - Degree never goes under 0.5 + 0.5/m
    apart = equicorrelated(5, 0.5)

    assert 1.0 - degree_uncertainty(apart) == pytest.approx(0.6)
    assert agreement_confidence(apart, 0.5) == pytest.approx(0.0)


def test_agreement_confidence_rescales_the_mean_pairwise_similarity() -> None:
    sim = np.array([[1.0, 0.9, 0.7], [0.9, 1.0, 0.5], [0.7, 0.5, 1.0]])  # mean pair 0.7

    assert agreement_confidence(sim, 0.5) == pytest.approx((0.7 - 0.5) / 0.5)
    assert agreement_confidence(sim, 0.0) == pytest.approx(0.7)
    assert agreement_confidence(equicorrelated(4, 0.3), 0.5) == 0.0  # clipped, not negative


def test_agreement_confidence_rises_as_answers_agree() -> None:
    values = [agreement_confidence(equicorrelated(4, a), 0.5) for a in (0.5, 0.6, 0.8, 0.95)]

    assert all(low < high for low, high in itertools.pairwise(values))


def test_agreement_confidence_needs_a_pair() -> None:
    assert agreement_confidence(np.array([[1.0]]), 0.5) is None


def test_agreement_confidence_rejects_an_unrelated_level_of_one() -> None:
    with pytest.raises(ConfigurationError, match="unrelated_similarity"):
        agreement_confidence(np.ones((2, 2)), 1.0)
