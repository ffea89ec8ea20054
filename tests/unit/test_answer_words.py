"""Answers compared by the words that answer: what sentence embeddings miss."""

from __future__ import annotations

import numpy as np
import pytest

from uq_guard.scoring.answer_words import (
    answer_word_similarity,
    answer_words,
    content_words,
    overlap_coefficient,
    reply_word_agreement,
    word_overlap,
)

QUESTION = "What is 7 times 8?"


def test_the_question_s_own_words_are_not_answer_words() -> None:
    assert answer_words("7 times 8 is 56.", QUESTION) == ["56"]
    assert answer_words("The capital is Canberra.", "What is the capital?") == ["canberra"]


def test_function_words_do_not_count_unless_nothing_else_is_said() -> None:
    assert content_words("It is Canberra, of course.", "What is the capital?") == {
        "canberra",
        "course",
    }
    assert content_words("No.", "Is Sydney the capital?") == {"no"}
    assert content_words("", QUESTION) == frozenset()


def test_word_overlap_is_jaccard() -> None:
    assert word_overlap(frozenset("ab"), frozenset("ab")) == 1.0
    assert word_overlap(frozenset("ab"), frozenset("ac")) == pytest.approx(1 / 3)
    assert word_overlap(frozenset(), frozenset()) == 1.0
    assert word_overlap(frozenset("a"), frozenset()) == 0.0


def test_a_different_number_is_disagreement_though_the_sentences_look_alike() -> None:
    agreeing = reply_word_agreement(
        "7 times 8 is 56.", ["56", "It is 56.", "7 times 8 is 56"], QUESTION
    )
    differing = reply_word_agreement(
        "7 times 8 is 54.", ["56", "It is 72.", "7 times 8 is 56"], QUESTION
    )
    assert agreeing == 1.0
    assert differing == 0.0


def test_the_similarity_matrix_is_symmetric_with_a_unit_diagonal() -> None:
    texts = ["It is 56.", "56, I think", "54", "7 times 8 is 56"]
    matrix = answer_word_similarity(texts, QUESTION)
    assert matrix.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(matrix), 1.0)
    np.testing.assert_array_equal(matrix, matrix.T)
    assert matrix[0, 3] == 1.0  # both say only "56"
    assert matrix[0, 1] == pytest.approx(0.5)  # {56} and {56, think}
    assert matrix[0, 2] == 0.0


def test_overlap_coefficient_divides_by_the_smaller_set() -> None:
    assert overlap_coefficient(frozenset("ab"), frozenset("abcd")) == 1.0
    assert overlap_coefficient(frozenset("ab"), frozenset("acde")) == 0.5
    assert overlap_coefficient(frozenset(), frozenset()) == 1.0
    assert overlap_coefficient(frozenset("a"), frozenset()) == 0.0


def test_a_long_reply_agrees_with_short_samples_that_name_its_answer() -> None:
    question = "Who wrote the novel Moby-Dick?"
    reply = (
        'The novel "Moby-Dick" by Herman Melville is widely regarded as one of the most '
        "iconic works of American literature."
    )
    samples = ["Herman Melville.", "Herman Melville wrote it.", "Mark Twain"]

    assert reply_word_agreement(reply, samples, question) == pytest.approx((1 + 1 + 0) / 3)


def test_no_samples_no_value() -> None:
    assert reply_word_agreement("56", [], QUESTION) is None
