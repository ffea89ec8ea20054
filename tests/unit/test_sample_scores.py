"""``score_samples``: which confidence a call reports, on one scale (ALGORITHMS §2.9).

A table embedder gives each text a chosen unit vector, so every similarity
below is known exactly: equal vectors agree (cosine 1), orthogonal ones are
unrelated (cosine 0, which ``shifted_cosine`` scores 0.5 and ``abs_cosine`` 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from uq_guard.scoring.suite import score_samples

QUESTION = "What is the capital of France?"
REWORDED = "Which city is the capital of France?"
# one direction per meaning; the answers are mutually unrelated
MEANINGS = {
    QUESTION: 0,
    REWORDED: 0,
    "Paris": 1,
    "It is Paris.": 1,
    "a bicycle": 2,
    "42 degrees": 3,
    "blue whales sing": 4,
    "the year 1066": 5,
}


class TableEmbedder:
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), len(set(MEANINGS.values()))))
        for row, text in enumerate(texts):
            vectors[row, MEANINGS[text]] = 1.0
        return vectors


def score(answers: list[list[str]], reply: str, similarity="shifted_cosine", prompts=None):
    return score_samples(
        embedder=TableEmbedder(),
        prompts=prompts or [QUESTION],
        answers=answers,
        reply=reply,
        similarity=similarity,
    )


ERRATIC = ["a bicycle", "42 degrees", "blue whales sing", "the year 1066"]


@pytest.mark.parametrize("similarity", ["shifted_cosine", "abs_cosine"])
def test_sample_only_confidence_is_zero_when_every_answer_is_unrelated(similarity: str) -> None:
    scored = score([ERRATIC], reply="Paris", similarity=similarity)

    assert scored.method == "degree"
    assert scored.confidence == pytest.approx(0.0)


@pytest.mark.parametrize("similarity", ["shifted_cosine", "abs_cosine"])
def test_sample_only_confidence_is_one_when_every_answer_agrees(similarity: str) -> None:
    scored = score([["Paris", "It is Paris.", "Paris"]], reply="Paris", similarity=similarity)

    assert scored.method == "degree"
    assert scored.confidence == pytest.approx(1.0)


@pytest.mark.parametrize("similarity", ["shifted_cosine", "abs_cosine"])
def test_sample_only_confidence_counts_the_reply_as_one_of_the_answers(similarity: str) -> None:
    # the reply and the samples: Paris, Paris, a bicycle, 42 degrees -> 1 agreeing pair of 6
    scored = score([["Paris", "a bicycle", "42 degrees"]], reply="Paris", similarity=similarity)

    assert scored.confidence == pytest.approx(1 / 6)


def test_a_callable_similarity_takes_zero_as_unrelated() -> None:
    def same_meaning(texts: list[str]) -> np.ndarray:
        return np.array([[float(MEANINGS[a] == MEANINGS[b]) for b in texts] for a in texts])

    assert score([ERRATIC], reply="Paris", similarity=same_meaning).confidence == 0.0
    partial = score([["Paris", "a bicycle", "42 degrees"]], reply="Paris", similarity=same_meaning)
    assert partial.confidence == pytest.approx(1 / 6)


def test_the_raw_degree_score_is_still_lin_et_al_over_the_samples_alone() -> None:
    scored = score([ERRATIC], reply="Paris")

    # U_Deg = 1 - mean(W) over the 4 samples, diagonal included: 1 - (4 + 12 * 0.5) / 16
    assert scored.scores["degree"] == pytest.approx(0.375)
    assert scored.uncertainty == scored.scores["degree"]


@pytest.mark.parametrize(("reply", "expected"), [("It is Paris.", 1.0), ("a bicycle", 0.0)])
def test_one_sample_is_compared_with_the_reply(reply: str, expected: float) -> None:
    scored = score([["Paris"]], reply=reply)

    assert scored.method == "degree"
    assert scored.confidence == pytest.approx(expected)


def test_unanswered_perturbations_fall_back_to_the_same_scale() -> None:
    scored = score([ERRATIC, []], reply="Paris", prompts=[QUESTION, REWORDED])

    assert scored.method == "degree"
    assert scored.confidence == pytest.approx(0.0)
    assert any("perturbed prompts got no answers" in note for note in scored.degraded_reasons)


def test_no_answer_at_all_gives_no_confidence() -> None:
    scored = score([[]], reply="Paris")

    assert scored.confidence is None
    assert scored.method == "unavailable"


# --- the default similarity: answers compared by their words -----------------

ARITHMETIC = "What is 7 times 8?"
FRAMED = "Q: What is 7 times 8?"


class OneVectorEmbedder:
    """The two prompts apart, every answer the same vector: only words tell answers apart."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        prompts = {ARITHMETIC: [1.0, 0.0, 0.0], FRAMED: [0.0, 1.0, 0.0]}
        return np.array([prompts.get(text, [0.0, 0.0, 1.0]) for text in texts])


def score_words(answers: list[list[str]], reply: str):
    return score_samples(
        embedder=OneVectorEmbedder(),
        prompts=[ARITHMETIC, FRAMED],
        answers=answers,
        reply=reply,
        n_bootstrap=0,
    )


def test_answer_words_tell_numbers_apart_where_embeddings_cannot() -> None:
    agreeing = score_words([["56", "It is 56."], ["7 times 8 is 56", "56!"]], reply="It is 56.")
    differing = score_words([["56", "It is 54."], ["7 times 8 is 72", "48"]], reply="It is 56.")

    assert agreeing.method == differing.method == "inv_entropy"
    assert agreeing.confidence == pytest.approx(1.0)
    assert agreeing.scores["inv_entropy_confidence"] == pytest.approx(1.0)
    assert differing.scores["inv_entropy_confidence"] < 0.5
    assert differing.confidence < 0.5
    # the embedding baselines still see one meaning everywhere
    assert differing.scores["reply_agreement"] == pytest.approx(1.0)


def test_a_reply_no_sample_agrees_with_is_not_trusted_though_the_samples_agree() -> None:
    scored = score_words([["56", "It is 56."], ["56.", "56"]], reply="It is 54.")

    assert scored.scores["inv_entropy_confidence"] == pytest.approx(1.0)  # about the samples
    assert scored.scores["reply_word_agreement"] == 0.0
    assert scored.confidence == pytest.approx(0.5)  # the mean of the two


def test_reply_word_agreement_reads_every_prompt_s_samples() -> None:
    scored = score_words([["54", "54"], ["56", "56"]], reply="56")

    assert scored.scores["reply_word_agreement"] == pytest.approx(0.5)
