"""TSU: the share of questions whose uncertainty rises strictly with temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uq_guard import ConfigurationError
from uq_guard.evaluation import tsu

TEMPS = [0.3, 0.7, 1.0]
# rises, ties at the last step, falls, rises
UQ = [[1.0, 2.0, 3.0], [1.0, 2.0, 2.0], [3.0, 2.0, 1.0], [0.0, 1.0, 5.0]]


def test_tsu_by_hand() -> None:
    result = tsu(UQ, TEMPS)

    assert result.chain == pytest.approx(0.5)
    assert (result.n_chain, result.n_questions) == (2, 4)
    assert result.pairs == {
        (0.3, 0.7): pytest.approx(0.75),
        (0.7, 1.0): pytest.approx(0.5),  # the tie fails
        (0.3, 1.0): pytest.approx(0.75),
    }
    assert result.temperatures == (0.3, 0.7, 1.0)


def test_a_tie_at_any_step_fails_the_chain() -> None:
    assert tsu([[0.5, 0.5, 0.5, 0.5]], [0.3, 0.7, 1.0, 1.4]).chain == 0.0
    assert tsu([[0.1, 0.2, 0.3, 0.4]], [0.3, 0.7, 1.0, 1.4]).chain == 1.0


def test_as_dict_is_json_clean() -> None:
    data = tsu(np.asarray(UQ), TEMPS).as_dict()
    assert json.loads(json.dumps(data))["pairs"]["0.7->1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("uq", "temps", "message"),
    [
        ([[1.0]], [0.7], "at least two temperatures"),
        ([[1.0, 2.0]], [0.7, 0.7], "strictly increasing"),
        ([[1.0, 2.0]], [1.0, 0.7], "strictly increasing"),
        ([[1.0, 2.0, 3.0]], [0.3, 0.7], "shape"),
        ([1.0, 2.0], [0.3, 0.7], "shape"),
        (np.zeros((0, 2)), [0.3, 0.7], "no questions"),
        ([[1.0, 2.0], [1.0, float("nan")]], [0.3, 0.7], "question 1 at T=0.7"),
    ],
)
def test_bad_input_is_named(uq, temps, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        tsu(uq, temps)
