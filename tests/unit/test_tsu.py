"""TSU: the share of questions whose uncertainty rises strictly with temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uq_guard import ConfigurationError
from uq_guard.evaluation import tsu
from uq_guard.evaluation.records import EvalRecord
from uq_guard.evaluation.report import GUARD_CONFIDENCE, tsu_by_method

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


def _record(qid: str, *, confidence: float, inv_entropy: float, gnll: float) -> EvalRecord:
    return EvalRecord(
        id=qid,
        question=f"q{qid}",
        gold=["a"],
        reply="a",
        confidence=confidence,
        scores={"inv_entropy": inv_entropy, "gnll": gnll},
    )


def test_tsu_by_method_aligns_questions_and_orients_every_score() -> None:
    # question "0" rises at every step for both; "1" rises for inv_entropy only;
    # "2" is missing at T=1.0 and must be left out; gnll reads the greedy reply: ties
    runs = {
        1.0: [
            _record("0", confidence=0.5, inv_entropy=2.0, gnll=1.0),
            _record("1", confidence=0.7, inv_entropy=1.5, gnll=1.0),
        ],
        0.3: [
            _record("0", confidence=0.9, inv_entropy=1.0, gnll=1.0),
            _record("1", confidence=0.6, inv_entropy=1.0, gnll=1.0),
            _record("2", confidence=0.9, inv_entropy=0.1, gnll=1.0),
        ],
    }
    results = tsu_by_method(runs)
    assert list(results) == ["inv_entropy", GUARD_CONFIDENCE, "gnll"]  # best chain first
    assert results["inv_entropy"].temperatures == (0.3, 1.0)
    assert results["inv_entropy"].n_questions == 2 and results["inv_entropy"].chain == 1.0
    assert results[GUARD_CONFIDENCE].chain == 0.5  # a confidence must fall, so it is negated
    assert results["gnll"].chain == 0.0


def test_tsu_by_method_needs_two_temperatures() -> None:
    with pytest.raises(ConfigurationError, match="two temperatures"):
        tsu_by_method({0.7: [_record("0", confidence=0.5, inv_entropy=1.0, gnll=1.0)]})
