"""The reply's answer words against the samples': what sentence embeddings miss."""

from __future__ import annotations

import pytest

from uq_guard.scoring.answer_words import answer_words, reply_word_agreement, token_f1

QUESTION = "What is 7 times 8?"


def test_the_question_s_own_words_are_not_answer_words() -> None:
    assert answer_words("7 times 8 is 56.", QUESTION) == ["56"]
    assert answer_words("The capital is Canberra.", "What is the capital?") == ["canberra"]


def test_token_f1_is_squads() -> None:
    assert token_f1(["a", "b"], ["a", "b"]) == 1.0
    assert token_f1(["a", "b"], ["a", "c"]) == pytest.approx(0.5)
    assert token_f1([], []) == 1.0 and token_f1(["a"], []) == 0.0


def test_a_different_number_is_disagreement_though_the_sentences_look_alike() -> None:
    agreeing = reply_word_agreement(
        "7 times 8 is 56.", ["56", "It is 56.", "7 times 8 is 56"], QUESTION
    )
    differing = reply_word_agreement(
        "7 times 8 is 54.", ["56", "It is 72.", "7 times 8 is 56"], QUESTION
    )
    assert agreeing is not None and differing is not None
    assert agreeing > 0.6 > 0.1 > differing


def test_no_samples_no_value() -> None:
    assert reply_word_agreement("56", [], QUESTION) is None
