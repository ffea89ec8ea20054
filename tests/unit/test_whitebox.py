"""White-box scorers from per-token log-probabilities and entropies."""

from __future__ import annotations

import math

import pytest

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring import entropy_area_score, gnll, max_token_nll, mean_token_entropy


def test_gnll_is_the_negative_sum_of_logprobs() -> None:
    assert gnll([-0.1, -0.2, -0.7]) == pytest.approx(1.0)


def test_gnll_of_no_tokens_is_zero() -> None:
    assert gnll([]) == 0.0


def test_gnll_of_an_impossible_token_is_infinite_not_nan() -> None:
    assert gnll([-0.1, -math.inf]) == math.inf


def test_max_token_nll_reads_the_least_likely_token_whatever_the_length() -> None:
    assert max_token_nll([-0.1, -2.5, -0.3]) == pytest.approx(2.5)
    # a long, sure reply and a short one with the same weakest token score the same,
    # where G-NLL grows with the length
    long_sure = [-0.05] * 40 + [-1.0]
    assert max_token_nll(long_sure) == max_token_nll([-1.0]) == pytest.approx(1.0)
    assert gnll(long_sure) > gnll([-1.0])
    assert max_token_nll([]) == 0.0
    assert max_token_nll([-0.1, -math.inf]) == math.inf
    with pytest.raises(ConfigurationError, match="NaN"):
        max_token_nll([-0.1, math.nan])


def test_mean_token_entropy() -> None:
    assert mean_token_entropy([0.5, 1.5, 1.0]) == pytest.approx(1.0)
    assert mean_token_entropy([]) == 0.0


def test_entropy_area_score_of_a_flat_curve_is_its_height() -> None:
    assert entropy_area_score([0.7] * 6) == pytest.approx(0.7)


def test_entropy_area_score_trapezoid_over_the_span() -> None:
    # Points (0, 0), (1, 0), (2, 3): area 0 + 1.5 over a span of 2.
    assert entropy_area_score([0.0, 0.0, 3.0]) == pytest.approx(0.75)


def test_entropy_area_score_weighs_end_tokens_half() -> None:
    middle_spike = entropy_area_score([0.0, 1.0, 0.0])
    end_spike = entropy_area_score([1.0, 0.0, 0.0])

    assert middle_spike == pytest.approx(0.5)
    assert end_spike == pytest.approx(0.25)
    assert mean_token_entropy([0.0, 1.0, 0.0]) == mean_token_entropy([1.0, 0.0, 0.0])


def test_entropy_area_score_of_one_and_no_tokens() -> None:
    assert entropy_area_score([1.3]) == pytest.approx(1.3)
    assert entropy_area_score([]) == 0.0


@pytest.mark.parametrize("scorer", [gnll, mean_token_entropy, entropy_area_score])
def test_nan_is_rejected(scorer: object) -> None:
    with pytest.raises(ConfigurationError, match="contains NaN"):
        scorer([0.1, math.nan])  # type: ignore[operator]


@pytest.mark.parametrize("scorer", [gnll, mean_token_entropy, entropy_area_score])
def test_two_dimensional_input_is_rejected(scorer: object) -> None:
    with pytest.raises(ConfigurationError, match="must be 1-D"):
        scorer([[0.1, 0.2]])  # type: ignore[operator]


def test_non_numeric_input_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="token_logprobs must be a sequence of numbers"):
        gnll(["a"])  # type: ignore[list-item]
