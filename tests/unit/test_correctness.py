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


# -- containment must not pass on a stray match --------------------------------


def test_a_month_alone_does_not_match_a_date_in_a_long_reply() -> None:
    reply = "The International Day for Women in Science is observed on March 11th."
    assert assess_answer(reply, "March") == Correctness(False, "none")
    assert not assess_answer("The film was released in May 2010.", ["May"]).correct
    assert not assess_answer("The mission was Apollo 11.", "Apollo").correct
    assert assess_answer("It is celebrated every year in March.", "March").correct


def test_a_year_is_still_found_in_a_date() -> None:
    assert assess_answer("in december 1972", "1972") == Correctness(True, "containment", "1972")
    reply = "The last crewed landing was on December 14, 1972, by Apollo 17."
    assert assess_answer(reply, "1972").correct


def test_capital_and_currency_replies_stay_right() -> None:
    question = "What is the capital of France?"
    verdict = assess_answer("The capital of France is Paris.", "Paris", question=question)
    assert verdict == Correctness(True, "containment", "Paris")
    faroe = "What is the currency of Faroe Islands?"
    reply = "The currency of the Faroe Islands is the Danish krone (DKK)."
    assert assess_answer(reply, ["Danish Krone", "DKK"], question=faroe).correct
    short = assess_answer("It is the krone (DKK).", ["Danish Krone", "DKK"], question=faroe)
    assert short == Correctness(True, "containment", "DKK")
    reply = "The currency of Japan is the Japanese Yen (JPY). It is the official currency of Japan."
    assert assess_answer(reply, ["Yen", "JPY"], question="What is the currency of Japan?").correct


def test_a_short_gold_answer_counts_only_in_the_lead_of_a_long_reply() -> None:
    # NQ-Open: "where was the first colony in north america located"
    hedged = (
        "The first English colony in North America was Roanoke, founded in 1585 on an island "
        "off the coast of present-day North Carolina. Later settlements followed in Jamestown, "
        "Virginia."
    )
    assert not assess_answer(hedged, "Virginia").correct
    direct = "The first colony was established in Jamestown, Virginia, on May 14, 1607."
    assert assess_answer(direct, "Virginia").correct
    # a short opening sentence does not use up the lead
    assert assess_answer("Good question! The first colony was in Virginia.", "Virginia").correct
    lower_leg = (
        "The tibia and fibula are two of the bones in the lower leg. They are located below the "
        "knee."
    )
    assert assess_answer(lower_leg, "leg").correct


def test_a_reply_that_only_restates_the_question_does_not_answer_it() -> None:
    question = "What is the capital of Holy See (Vatican City State)?"
    reply = "The capital of Holy See (Vatican City State) is Rome."
    assert not assess_answer(reply, "Vatican City State", question=question).correct
    assert assess_answer(reply, "Vatican City State").correct  # no question: nothing to echo
    assert assess_answer("Vatican City State", "Vatican City State", question=question).correct
    question = "what are the active materials of a lead acid battery"
    reply = "A lead acid battery is a rechargeable battery that uses lead-acid cells."
    assert not assess_answer(reply, ["Lead", "lead dioxide"], question=question).correct
    question = "What is 6 times 1?"
    assert not assess_answer("6 times 1 is 7.", "6", question=question).correct
    assert assess_answer("6 times 1 equals 6.", "6", question=question).correct


def test_a_number_is_found_after_the_working() -> None:
    reply = "To find the answer, we subtract 13 from 39 and then check the result. 39 - 13 = 26."
    assert assess_answer(reply, "26", question="What is 39 minus 13?").correct


def test_a_short_gold_answer_that_only_starts_a_longer_name_is_not_found() -> None:
    assert not assess_answer("Paris Hilton is a celebrity.", "Paris").correct
    assert not assess_answer("It is known as March Madness.", "March").correct
    assert assess_answer("The Louvre is in Paris, France.", "Paris").correct
    assert assess_answer("Herman Melville wrote it.", "Melville").correct  # a given name before


def test_an_acronym_must_appear_in_capitals() -> None:
    assert not assess_answer("Let us see: I am not sure.", "US").correct
    assert assess_answer("It was first sold in the US.", "US").correct
    assert not assess_answer("the abbreviation is dkk.", "DKK").correct


def test_the_guards_never_reject_an_exact_match() -> None:
    assert assess_answer("March", "March") == Correctness(True, "exact_match", "March")
    assert assess_answer("Rome.", "Rome", question="Is it Rome?").rule == "exact_match"
