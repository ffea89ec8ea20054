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
