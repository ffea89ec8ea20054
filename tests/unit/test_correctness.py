"""Correctness of free-text answers: SQuAD normalisation, exact match, containment, judge."""

from __future__ import annotations

import numpy as np
import pytest

from uq_guard import ConfigurationError
from uq_guard.evaluation import Correctness, assess_answer, normalize_answer

MOON = ["14 December 1972 UTC", "December 1972"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   Apple, a day ", "apple day"),
        ("Théâtre", "théâtre"),
        ("U.S.A.", "usa"),
        ("The", ""),
    ],
)
def test_squad_normalisation(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_after_normalisation_names_the_gold_answer() -> None:
    assert assess_answer("december, 1972.", MOON) == Correctness(
        True, "exact_match", "December 1972"
    )


def test_containment_of_a_whole_run_of_words() -> None:
    verdict = assess_answer("The last landing was in December 1972, by Apollo 17.", MOON)
    assert verdict == Correctness(True, "containment", "December 1972")
    # a gold answer inside a longer number or word is not contained
    assert not assess_answer("It happened in 1990", "9").correct
    assert not assess_answer("Parisian food", "Paris").correct


def test_exact_match_wins_over_containment_and_containment_can_be_off() -> None:
    assert assess_answer("Paris", ["Paris", "Paris France"]).rule == "exact_match"
    assert assess_answer("Paris, France", "Paris", containment=False) == Correctness(False, "none")


def test_a_gold_answer_that_normalises_to_nothing_never_matches() -> None:
    assert not assess_answer("The", "the").correct
    assert not assess_answer("", ["a"]).correct


def test_judge_decides_only_when_no_rule_matched() -> None:
    calls = []

    def judge(question: str, answer: str, golds) -> bool:
        calls.append((question, answer, list(golds)))
        return True

    assert assess_answer("Paris", "Paris", judge=judge).rule == "exact_match"
    assert calls == []
    verdict = assess_answer("the French capital", "Paris", question="Capital?", judge=judge)
    assert verdict == Correctness(True, "judge")
    assert calls == [("Capital?", "the French capital", ["Paris"])]
    assert assess_answer("Lyon", "Paris", judge=lambda *_: np.bool_(False)) == Correctness(
        False, "judge"
    )


def test_judge_must_return_a_bool_and_its_errors_propagate() -> None:
    with pytest.raises(ConfigurationError, match="bool, got str: 'no'"):
        assess_answer("Lyon", "Paris", judge=lambda *_: "no")

    def broken(*_):
        raise TimeoutError("grader timed out")

    with pytest.raises(TimeoutError):
        assess_answer("Lyon", "Paris", judge=broken)


def test_bad_gold_answers() -> None:
    with pytest.raises(ConfigurationError, match="at least one gold answer"):
        assess_answer("Paris", [])
    with pytest.raises(ConfigurationError, match="strings"):
        assess_answer("Paris", [None])  # type: ignore[list-item]
