"""Inv-Entropy (ALGORITHMS §2) against a naive reference, hand-computed cases, and §7 defects."""

from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring import InvEntropyResult, inv_entropy
from uq_guard.scoring.inv_entropy import _draw_indices

MEASURES = (
    "inv_entropy",
    "forward_entropy",
    "conditional_entropy",
    "max_output_mass",
    "marginal_wasserstein",
)
ESTIMATED = (*MEASURES, "h_same", "h_apart")


# --------------------------------------------------------------------------------------
# A deliberately naive reference: Python lists and loops over entries, like the
# authors' code, sharing nothing with the implementation but scipy's Wasserstein.
# --------------------------------------------------------------------------------------


def _neg_xlogx(value: float) -> float:
    return -value * math.log(value) if value > 0 else 0.0


def _naive_row_normalise(sim: list[list[float]]) -> list[list[float]]:
    result = []
    for row in sim:
        total = sum(row)
        result.append([entry / total if total > 0 else 0.0 for entry in row])
    return result


def _naive_matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    n = len(a)
    return [[sum(a[i][k] * b[k][j] for k in range(n)) for j in range(n)] for i in range(n)]


def _naive_inv_entropy(sim_x: list[list[float]], sim_y: list[list[float]]) -> float:
    q = _naive_matmul(_naive_row_normalise(sim_y), _naive_row_normalise(sim_x))
    return sum(_neg_xlogx(q[i][i]) for i in range(len(q)))


def naive_measures(sim_x: np.ndarray, sim_y: np.ndarray) -> dict[str, float]:
    """Every measure of §2 by the formulas, with loops over entries."""
    sx, sy = np.asarray(sim_x).tolist(), np.asarray(sim_y).tolist()
    n = len(sx)
    px = _naive_row_normalise(sx)
    py = _naive_row_normalise(sy)
    q = _naive_matmul(py, px)
    p_y = [sum(py[i][j] for i in range(n)) / n for j in range(n)]
    p_y_py = [sum(p_y[k] * py[k][j] for k in range(n)) for j in range(n)]
    p_x = [sum(p_y_py[k] * px[k][j] for k in range(n)) for j in range(n)]
    forward = 0.0
    for i in range(n):
        r_ii = q[i][i] * p_y[i] / p_x[i] if p_x[i] > 0 else 0.0
        forward += _neg_xlogx(r_ii)
    conditional = 0.0
    for i in range(n):
        conditional += p_y[i] * sum(_neg_xlogx(q[i][j]) for j in range(n))
    ones = [[1.0] * n for _ in range(n)]
    identity = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    return {
        "inv_entropy": sum(_neg_xlogx(q[i][i]) for i in range(n)),
        "forward_entropy": forward,
        "conditional_entropy": conditional,
        "max_output_mass": max(p_y),
        "marginal_wasserstein": float(wasserstein_distance(p_x, p_y)),
        "h_same": _naive_inv_entropy(sx, ones),
        "h_apart": _naive_inv_entropy(sx, identity),
    }


def naive_confidence(values: dict[str, float]) -> float | None:
    span = values["h_apart"] - values["h_same"]
    if abs(span) < 1e-12:
        return None
    return min(1.0, max(0.0, 1.0 - (values["inv_entropy"] - values["h_same"]) / span))


def naive_bootstrap(sim_x: np.ndarray, sim_y: np.ndarray, draws: np.ndarray) -> dict[str, float]:
    """Mean of the naive measures over the given index sets, one draw at a time."""
    totals = dict.fromkeys(ESTIMATED, 0.0)
    for kept in draws:
        sub_x = [[sim_x[i][j] for j in kept] for i in kept]
        sub_y = [[sim_y[i][j] for j in kept] for i in kept]
        for name, value in naive_measures(np.array(sub_x), np.array(sub_y)).items():
            totals[name] += value
    return {name: total / len(draws) for name, total in totals.items()}


def random_similarity(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random symmetric non-negative matrix with unit diagonal."""
    values = rng.random((n, n))
    sim = (values + values.T) / 2
    np.fill_diagonal(sim, 1.0)
    return sim


def assert_matches(result: InvEntropyResult, expected: dict[str, float]) -> None:
    for name in ESTIMATED:
        assert getattr(result, name) == pytest.approx(expected[name], abs=1e-9, rel=0), name
    confidence = naive_confidence(expected)
    if confidence is None:
        assert result.confidence is None
    else:
        assert result.confidence == pytest.approx(confidence, abs=1e-9, rel=0)


# --------------------------------------------------------------------------------------
# Plain value
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "seed"), [(2, 0), (3, 1), (4, 2), (5, 3), (7, 4), (9, 5)])
def test_plain_value_matches_naive_reference(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim_x, sim_y = random_similarity(n, rng), random_similarity(n, rng)

    result = inv_entropy(sim_x, sim_y)

    assert_matches(result, naive_measures(sim_x, sim_y))
    assert (result.n_pairs, result.n_groups, result.n_bootstrap) == (n, n, 0)


def test_plain_value_matches_naive_reference_on_asymmetric_input() -> None:
    # The formulas do not need symmetry; neither does the implementation.
    rng = np.random.default_rng(11)
    sim_x, sim_y = rng.random((6, 6)), rng.random((6, 6))

    assert_matches(inv_entropy(sim_x, sim_y), naive_measures(sim_x, sim_y))


def test_hand_computed_2x2() -> None:
    # S_X = S_Y = [[1, 1/3], [1/3, 1]]  ->  P_X = P_Y = M = [[3/4, 1/4], [1/4, 3/4]].
    # Q = M·M = [[5/8, 3/8], [3/8, 5/8]]; M is doubly stochastic, so p_y = p_x = (1/2, 1/2)
    # and R = Q.
    #   inv_entropy         = -2·(5/8)·ln(5/8)                 = 0.587505...
    #   forward_entropy     = the same
    #   conditional_entropy = -(5/8·ln 5/8 + 3/8·ln 3/8)       = 0.661563...
    #   max_output_mass     = 1/2;  marginal_wasserstein = 0
    #   h_same  (P_Y uniform: Q rows = column means of M = 1/2) = ln 2
    #   h_apart (P_Y = I: Q = M)     = -2·(3/4)·ln(3/4)        = 0.431523...
    #   confidence = 1 - (inv - ln 2) / (h_apart - ln 2)       = 0.596204...
    sim = np.array([[1.0, 1 / 3], [1 / 3, 1.0]])
    inv = -2 * (5 / 8) * math.log(5 / 8)
    h_apart = -2 * (3 / 4) * math.log(3 / 4)

    result = inv_entropy(sim, sim)

    assert result.inv_entropy == pytest.approx(inv, abs=1e-12)
    assert result.forward_entropy == pytest.approx(inv, abs=1e-12)
    assert result.conditional_entropy == pytest.approx(
        -(5 / 8 * math.log(5 / 8) + 3 / 8 * math.log(3 / 8)), abs=1e-12
    )
    assert result.max_output_mass == pytest.approx(0.5, abs=1e-12)
    assert result.marginal_wasserstein == pytest.approx(0.0, abs=1e-12)
    assert result.h_same == pytest.approx(math.log(2), abs=1e-12)
    assert result.h_apart == pytest.approx(h_apart, abs=1e-12)
    expected_confidence = 1 - (inv - math.log(2)) / (h_apart - math.log(2))
    assert result.confidence == pytest.approx(expected_confidence, abs=1e-12)


def test_hand_computed_3x3() -> None:
    # S_X = I (three unrelated prompts) -> P_X = I and Q = P_Y.
    # S_Y = [[1,1,1],[1,1,0],[1,0,1]] -> P_Y = [[1/3,1/3,1/3],[1/2,1/2,0],[1/2,0,1/2]].
    #   diag(Q) = (1/3, 1/2, 1/2)       -> inv_entropy = (1/3)·ln 3 + ln 2
    #   p_y = column means of P_Y        = (4/9, 5/18, 5/18)  -> max_output_mass = 4/9
    #   p_x = p_yᵀ P_Y P_X               = (23/54, 31/108, 31/108)
    #   R[i,i] = Q[i,i]·p_y[i]/p_x[i]    = (8/23, 15/31, 15/31)
    #   conditional = Σ p_y[i]·H(row i)  = (4/9)·ln 3 + (5/9)·ln 2
    #   sorted p_y = (30, 30, 48)/108, sorted p_x = (31, 31, 46)/108
    #                                    -> marginal_wasserstein = (1+1+2)/(3·108) = 1/81
    #   h_same  = ln 3 (every Q[i,i] = 1/3);  h_apart = 0 (Q = I)
    #   confidence = 1 - (inv - ln 3)/(0 - ln 3) = inv / ln 3 = 1/3 + ln 2 / ln 3
    sim_x = np.eye(3)
    sim_y = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    inv = math.log(3) / 3 + math.log(2)

    result = inv_entropy(sim_x, sim_y)

    assert result.inv_entropy == pytest.approx(inv, abs=1e-12)
    assert result.forward_entropy == pytest.approx(
        -(8 / 23) * math.log(8 / 23) - 2 * (15 / 31) * math.log(15 / 31), abs=1e-12
    )
    assert result.conditional_entropy == pytest.approx(
        4 / 9 * math.log(3) + 5 / 9 * math.log(2), abs=1e-12
    )
    assert result.max_output_mass == pytest.approx(4 / 9, abs=1e-12)
    assert result.marginal_wasserstein == pytest.approx(1 / 81, abs=1e-12)
    assert result.h_same == pytest.approx(math.log(3), abs=1e-12)
    assert result.h_apart == pytest.approx(0.0, abs=1e-12)
    assert result.confidence == pytest.approx(1 / 3 + math.log(2) / math.log(3), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marginal_wasserstein_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim_x, sim_y = rng.random((8, 8)), random_similarity(8, rng)
    # Recompute the marginals independently of both implementations under test.
    p_y_matrix = sim_y / sim_y.sum(axis=1, keepdims=True)
    p_x_matrix = sim_x / sim_x.sum(axis=1, keepdims=True)
    p_y = p_y_matrix.mean(axis=0)
    p_x = p_y @ p_y_matrix @ p_x_matrix

    result = inv_entropy(sim_x, sim_y)

    assert result.marginal_wasserstein == pytest.approx(wasserstein_distance(p_x, p_y), abs=1e-12)
    assert result.max_output_mass == pytest.approx(p_y.max(), abs=1e-12)


def test_groups_are_ignored_by_the_plain_value() -> None:
    rng = np.random.default_rng(3)
    sim_x, sim_y = random_similarity(6, rng), random_similarity(6, rng)

    result = inv_entropy(sim_x, sim_y, groups=[0, 0, 1, 1, 2, 2], n_bootstrap=0)

    assert_matches(result, naive_measures(sim_x, sim_y))
    assert (result.n_groups, result.n_bootstrap) == (3, 0)


def test_as_scores_holds_the_five_measures_by_field_name() -> None:
    result = inv_entropy(np.eye(3), np.ones((3, 3)))

    scores = result.as_scores()

    assert tuple(scores) == MEASURES
    assert all(scores[name] == getattr(result, name) for name in MEASURES)


def test_without_perturbations_inv_entropy_is_ln_n_and_confidence_is_none() -> None:
    # m = 0: every prompt is the same, so P_X is uniform and Q[i,i] = 1/n whatever the answers.
    rng = np.random.default_rng(5)
    result = inv_entropy(np.ones((5, 5)), random_similarity(5, rng))

    assert result.inv_entropy == pytest.approx(math.log(5), abs=1e-12)
    assert result.confidence is None


# --------------------------------------------------------------------------------------
# Bootstrap (§2.7)
# --------------------------------------------------------------------------------------

GROUPS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def test_draws_keep_exactly_one_pair_per_group() -> None:
    groups = np.array([2, 0, 2, 1, 0, 2, 1])  # unordered labels, unequal sizes

    draws = _draw_indices(groups, 50, np.random.default_rng(0))

    assert draws.shape == (50, 3)
    assert np.array_equal(groups[draws], np.tile([0, 1, 2], (50, 1)))


def test_bootstrap_equals_naive_mean_over_the_same_draws() -> None:
    rng = np.random.default_rng(7)
    sim_x, sim_y = random_similarity(12, rng), random_similarity(12, rng)
    draws = _draw_indices(GROUPS, 30, np.random.default_rng(123))

    result = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=123)

    assert_matches(result, naive_bootstrap(sim_x, sim_y, draws))
    assert (result.n_pairs, result.n_groups, result.n_bootstrap) == (12, 4, 30)


def test_bootstrap_same_seed_same_result_other_seed_other_result() -> None:
    rng = np.random.default_rng(8)
    sim_x, sim_y = random_similarity(12, rng), random_similarity(12, rng)

    first = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=1)
    again = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=1)
    other = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=2)

    assert first == again
    assert first.inv_entropy != other.inv_entropy


def test_defect_1_reproducible_whatever_the_global_generators_do() -> None:
    # The reference seeded numpy but drew with Python's `random`.
    rng = np.random.default_rng(9)
    sim_x, sim_y = random_similarity(12, rng), random_similarity(12, rng)

    random.seed(1)
    np.random.seed(1)
    first = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=42)
    random.seed(999)
    random.random()
    np.random.seed(999)
    np.random.random(100)
    second = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=30, seed=42)

    assert first == second


def test_defect_2_all_groups_of_one_pair_returns_the_plain_value_promptly() -> None:
    # r = 1: a single distinct tuple exists; the reference looped forever hunting 30.
    rng = np.random.default_rng(10)
    sim_x, sim_y = random_similarity(6, rng), random_similarity(6, rng)

    start = time.perf_counter()
    result = inv_entropy(sim_x, sim_y, groups=np.arange(6), n_bootstrap=30)
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0
    assert result.n_bootstrap == 0
    assert_matches(result, naive_measures(sim_x, sim_y))


def test_defect_2_fewer_distinct_tuples_than_draws_still_returns() -> None:
    # groups [0, 0, 1]: only two distinct tuples, (0, 2) and (1, 2), for 30 draws.
    rng = np.random.default_rng(12)
    sim_x, sim_y = random_similarity(3, rng), random_similarity(3, rng)
    groups = [0, 0, 1]

    start = time.perf_counter()
    result = inv_entropy(sim_x, sim_y, groups=groups, n_bootstrap=30, seed=4)
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0
    assert result.n_bootstrap == 30
    draws = _draw_indices(np.array(groups), 30, np.random.default_rng(4))
    assert_matches(result, naive_bootstrap(sim_x, sim_y, draws))


def test_defect_3_unequal_group_sizes_work() -> None:
    # Failed samples were dropped: prompts got 3, 1, 2 and 4 answers.
    groups = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    rng = np.random.default_rng(13)
    sim_x, sim_y = random_similarity(10, rng), random_similarity(10, rng)

    result = inv_entropy(sim_x, sim_y, groups=groups, n_bootstrap=25, seed=6)

    draws = _draw_indices(groups, 25, np.random.default_rng(6))
    assert_matches(result, naive_bootstrap(sim_x, sim_y, draws))
    assert (result.n_pairs, result.n_groups, result.n_bootstrap) == (10, 4, 25)


def test_defect_7_the_field_is_named_max_output_mass() -> None:
    names = {field.name for field in dataclasses.fields(InvEntropyResult)}

    assert {name for name in names if name.startswith("max")} == {"max_output_mass"}


# --------------------------------------------------------------------------------------
# Confidence (§2.9)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bootstrap", [0, 30])
def test_identical_answers_give_full_confidence(n_bootstrap: int) -> None:
    rng = np.random.default_rng(14)
    sim_x = random_similarity(12, rng)

    result = inv_entropy(sim_x, np.ones((12, 12)), groups=GROUPS, n_bootstrap=n_bootstrap)

    assert result.confidence is not None
    assert result.confidence >= 0.99


@pytest.mark.parametrize("n_bootstrap", [0, 30])
def test_unrelated_answers_give_zero_confidence(n_bootstrap: int) -> None:
    rng = np.random.default_rng(15)
    sim_x = random_similarity(12, rng)

    result = inv_entropy(sim_x, np.eye(12), groups=GROUPS, n_bootstrap=n_bootstrap)

    assert result.confidence == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_bootstrap", [0, 30])
def test_one_prompt_gives_no_confidence(n_bootstrap: int) -> None:
    rng = np.random.default_rng(16)
    result = inv_entropy(
        np.ones((5, 5)), random_similarity(5, rng), groups=[0] * 5, n_bootstrap=n_bootstrap
    )

    assert result.confidence is None
    assert result.n_groups == 1


@pytest.mark.parametrize("seed", range(10))
def test_confidence_lies_in_unit_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim_x, sim_y = random_similarity(12, rng), random_similarity(12, rng)

    for n_bootstrap in (0, 10):
        result = inv_entropy(sim_x, sim_y, groups=GROUPS, n_bootstrap=n_bootstrap, seed=seed)
        assert result.confidence is not None
        assert 0.0 <= result.confidence <= 1.0


# --------------------------------------------------------------------------------------
# Degenerate inputs: numbers, never NaN
# --------------------------------------------------------------------------------------


def _assert_no_nan(result: InvEntropyResult) -> None:
    for name in ESTIMATED:
        assert math.isfinite(getattr(result, name)), name
    assert result.confidence is None or math.isfinite(result.confidence)


def test_one_pair() -> None:
    result = inv_entropy([[1.0]], [[1.0]], groups=[0], n_bootstrap=30)

    _assert_no_nan(result)
    assert result.inv_entropy == 0.0
    assert result.max_output_mass == 1.0
    assert result.confidence is None
    assert (result.n_pairs, result.n_groups, result.n_bootstrap) == (1, 1, 0)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_all_ones(n: int) -> None:
    result = inv_entropy(np.ones((n, n)), np.ones((n, n)))

    _assert_no_nan(result)
    assert result.inv_entropy == pytest.approx(math.log(n), abs=1e-12)
    assert result.confidence is None


def test_two_pairs_of_one_prompt_bootstrapped() -> None:
    result = inv_entropy(np.ones((2, 2)), np.eye(2), groups=[0, 0], n_bootstrap=30)

    _assert_no_nan(result)
    assert result.inv_entropy == 0.0  # each draw is a 1x1 walk: Q = [[1]]
    assert result.confidence is None


def test_all_zero_similarities_give_numbers() -> None:
    result = inv_entropy(np.zeros((4, 4)), np.zeros((4, 4)), groups=[0, 0, 1, 1], n_bootstrap=5)

    _assert_no_nan(result)


def test_zero_row_gives_numbers() -> None:
    sim = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])

    result = inv_entropy(sim, sim)

    _assert_no_nan(result)
    assert_matches(result, naive_measures(sim, sim))


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim_x", "sim_y", "match"),
    [
        (np.ones((2, 3)), np.ones((2, 3)), "sim_x must be a square"),
        (np.ones(3), np.ones(3), "sim_x must be a square"),
        (np.eye(2), np.ones((2, 3)), "sim_y must be a square"),
        (np.eye(2), np.eye(3), "same shape"),
        (np.full((2, 2), np.nan), np.eye(2), "sim_x has non-finite"),
        (np.eye(2), np.full((2, 2), np.inf), "sim_y has non-finite"),
        (-np.eye(2), np.eye(2), "sim_x has negative"),
        (np.eye(2), np.array([[1.0, -0.1], [-0.1, 1.0]]), "sim_y has negative"),
        (np.zeros((0, 0)), np.zeros((0, 0)), "sim_x is empty"),
        ([["a", "b"], ["c", "d"]], np.eye(2), "sim_x is not a numeric"),
    ],
)
def test_invalid_matrices_are_named(sim_x: object, sim_y: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        inv_entropy(sim_x, sim_y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": [0, 1]}, "groups must be a 1-D sequence of length 3"),
        ({"groups": [[0, 1, 2]]}, "groups must be a 1-D sequence of length 3"),
        ({"groups": [0.0, 1.0, 2.0]}, "groups must hold integer"),
        ({"n_bootstrap": -1}, "n_bootstrap must be >= 0"),
        ({"n_bootstrap": 2.5}, "n_bootstrap must be an integer"),
        ({"n_bootstrap": True}, "n_bootstrap must be an integer"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        inv_entropy(np.eye(3), np.eye(3), **kwargs)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        inv_entropy(np.eye(2), np.eye(3))


class TestUnrelatedReference:
    """§2.9's ``S_Y = I`` reference, and the shifted-cosine reading of "unrelated"."""

    def test_default_reference_is_the_identity(self) -> None:
        sim_x = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.85], [0.8, 0.85, 1.0]])
        apart = inv_entropy(sim_x, np.eye(3))
        assert apart.confidence == pytest.approx(0.0, abs=1e-12)
        assert apart.h_apart == pytest.approx(apart.inv_entropy, abs=1e-12)

    def test_unrelated_answers_under_shifted_cosine_score_zero_confidence(self) -> None:
        sim_x = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.85], [0.8, 0.85, 1.0]])
        unrelated = 0.5 * np.ones((3, 3)) + 0.5 * np.eye(3)  # cosine 0 -> 0.5
        literal = inv_entropy(sim_x, unrelated)
        shifted = inv_entropy(sim_x, unrelated, unrelated_similarity=0.5)
        assert shifted.confidence == pytest.approx(0.0, abs=1e-12)
        assert literal.confidence > 0.5  # the identity reference calls them fairly sure
        assert shifted.inv_entropy == literal.inv_entropy  # only the reference moves

    def test_out_of_range_reference_is_rejected(self) -> None:
        with pytest.raises(ConfigurationError, match="unrelated_similarity"):
            inv_entropy(np.eye(2), np.eye(2), unrelated_similarity=1.0)
