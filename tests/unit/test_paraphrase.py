"""The model-paraphrase perturber and its forgiving parser (ALGORITHMS §3, §7.3)."""

from __future__ import annotations

import pytest

from tests.unit.fake_backend import FakeBackend, prompt_of
from uq_guard.backend import Usage
from uq_guard.perturb import ModelParaphraser, parse_paraphrases

ORIGINAL = "What is the capital of France?"
A = "Which city is the capital of France?"
B = "What city serves as France's capital?"
C = "Name the capital city of France."


# -- parse_paraphrases --------------------------------------------------------


def test_plain_lines_are_kept_in_order() -> None:
    assert parse_paraphrases(f"{A}\n{B}\n{C}", ORIGINAL, 3) == [A, B, C]


@pytest.mark.parametrize(
    "text",
    [
        f"1. {A}\n2. {B}\n3. {C}",
        f"1) {A}\n2) {B}\n3) {C}",
        f"(1) {A}\n(2) {B}\n(3) {C}",
        f"1. {A}\n2) {B}\n(3) {C}",
        f"1: {A}\n2 - {B}\n3] {C}",
        f"- {A}\n* {B}\n• {C}",
        f"1. \"{A}\"\n2. “{B}”\n3. '{C}'",
        f"Paraphrase 1: {A}\nParaphrase 2: {B}\nParaphrase 3: {C}",
        f"Here are 3 paraphrases:\n{A}\n{B}\n{C}",
        f"Sure! Here are three ways to ask it:\n\n1. {A}\n\n2. {B}\n\n3. {C}\n",
        f"Rewrites:\n  1.   {A}  \n 2.{B}\n3.  {C}",
    ],
)
def test_numbering_bullets_quotes_labels_and_preambles_are_stripped(text: str) -> None:
    assert parse_paraphrases(text, ORIGINAL, 3) == [A, B, C]


def test_inner_whitespace_is_collapsed() -> None:
    assert parse_paraphrases("Which   city is\tthe capital of France?", ORIGINAL, 1) == [A]


def test_duplicates_are_dropped_case_insensitively() -> None:
    text = f"{A}\n{A.upper()}\n{A.lower()}\n{B}"

    assert parse_paraphrases(text, ORIGINAL, 5) == [A, B]


def test_copies_of_the_original_are_dropped() -> None:
    text = f"1. {ORIGINAL}\n2. {ORIGINAL.lower()}\n3. {A}"

    assert parse_paraphrases(text, ORIGINAL, 3) == [A]


def test_empty_lines_are_dropped() -> None:
    assert parse_paraphrases(f"\n\n{A}\n   \n\t\n{B}\n\n", ORIGINAL, 3) == [A, B]


@pytest.mark.parametrize("m", [1, 2, 3])
def test_never_more_than_m(m: int) -> None:
    assert (
        parse_paraphrases(f"{A}\n{B}\n{C}\nWhat's France's capital?", ORIGINAL, m) == [A, B, C][:m]
    )


def test_m_zero_gives_nothing() -> None:
    assert parse_paraphrases(f"{A}\n{B}", ORIGINAL, 0) == []


def test_fewer_than_m_come_back_as_they_are() -> None:
    assert parse_paraphrases(f"1. {A}", ORIGINAL, 9) == [A]


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\n\n \n",
        "1.\n2.\n3.",
        "- \n* \n•",
        "\"\"\n''",
        "Here are 3 paraphrases:",
        "Sure, here you go:\n\n",
        ORIGINAL,
    ],
)
def test_garbage_gives_an_empty_list(garbage: str) -> None:
    assert parse_paraphrases(garbage, ORIGINAL, 3) == []


def test_a_paraphrase_starting_with_a_decimal_number_keeps_it() -> None:
    """ "2.5 ..." is a number, not list item "2." followed by "5 ..."."""
    original = "What is 2.5 times 4?"

    assert parse_paraphrases("2.5 multiplied by 4 equals what?", original, 1) == [
        "2.5 multiplied by 4 equals what?"
    ]


def test_a_paraphrase_starting_with_a_year_keeps_it() -> None:
    original = "Who won the World Cup in 1998?"

    assert parse_paraphrases("1998 World Cup: who was the winner?", original, 1) == [
        "1998 World Cup: who was the winner?"
    ]


# -- ModelParaphraser ----------------------------------------------------------


def test_the_request_asks_for_m_rewrites_of_the_prompt_in_one_call() -> None:
    paraphraser = ModelParaphraser(FakeBackend(), temperature=0.9, max_tokens=200)

    request = paraphraser.request(ORIGINAL, 4)

    assert request.n == 1
    assert request.temperature == 0.9
    assert request.max_tokens == 200
    assert len(request.messages) == 1
    assert "4" in prompt_of(request) and ORIGINAL in prompt_of(request)


async def test_perturb_parses_the_models_answer() -> None:
    backend = FakeBackend(paraphrase_text=f"Here are 3:\n1. {A}\n2. {B}\n3. {C}")

    result = await ModelParaphraser(backend).perturb(ORIGINAL, 3)

    assert result.prompts == [A, B, C]
    assert result.method == "paraphrase"
    assert result.n_requested == 3
    assert result.notes == [] and result.degraded_reasons == []
    assert backend.calls == 1
    assert result.usage == Usage(prompt_tokens=10, completion_tokens=5, model_calls=1)


async def test_perturb_with_fewer_paraphrases_than_asked_says_so() -> None:
    backend = FakeBackend(paraphrases=[A, B])

    result = await ModelParaphraser(backend).perturb(ORIGINAL, 5)

    assert result.prompts == [A, B]
    assert result.n_requested == 5
    assert any("2 of 5" in reason for reason in result.degraded_reasons)


async def test_perturb_with_zero_asked_makes_no_call() -> None:
    backend = FakeBackend(paraphrases=[A])

    result = await ModelParaphraser(backend).perturb(ORIGINAL, 0)

    assert result.prompts == []
    assert backend.calls == 0


async def test_a_failed_paraphrase_request_gives_no_prompts_and_a_note() -> None:
    backend = FakeBackend(paraphrases=[A]).fail("paraphrase", ValueError("refused"))

    result = await ModelParaphraser(backend).perturb(ORIGINAL, 3)

    assert result.prompts == []
    assert any("refused" in reason for reason in result.degraded_reasons)
