"""Verbalized confidence: one extra call asking the model how sure it is of its reply."""

from __future__ import annotations

import pytest

from tests.unit.fake_backend import FakeBackend, erratic, kind_of
from uq_guard import Guard, GuardResult
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.report import CONFIDENCE_LIKE_SCORES
from uq_guard.scoring.verbalized import (
    VERBALIZED_PROMPT,
    parse_verbalized_confidence,
    verbalized_request,
)

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
PARAPHRASES = ["Which city is the capital of France?", "Name the capital city of France."]


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


async def run(backend: FakeBackend, embedder: SentenceTransformerEmbedder, **config) -> GuardResult:
    settings = {
        "perturbation": "paraphrase",
        "n_perturbations": 2,
        "n_samples": 3,
        "retry_wait_s": 0.0,
        "verbalized_confidence": True,
        **config,
    }
    return await Guard(backend, embedder=embedder, **settings).arun(QUESTION)


# -- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85", 0.85),
        ("85%", 0.85),
        ("Confidence: 85/100", 0.85),
        ("I would say 90 out of 100.", 0.9),
        ("I am 95 percent sure", 0.95),
        ("8/10", 0.8),
        ("0.85", 0.85),
        (".9", 0.9),
        ("100", 1.0),
        ("0", 0.0),
        ("On a scale of 0 to 100, I am 70.", 0.7),
        ("I'm 85-90% sure", 0.85),
        ("  72\n", 0.72),
    ],
)
def test_stated_confidences_are_read(text: str, expected: float) -> None:
    assert parse_verbalized_confidence(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["eighty", "very sure", "", "150", "12/10", "-5", "Paris is the capital."]
)
def test_answers_without_a_usable_number_give_none(text: str) -> None:
    assert parse_verbalized_confidence(text) is None


def test_the_question_follows_the_reply_as_a_new_user_turn() -> None:
    conversation = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"})

    request = verbalized_request(conversation, "Paris.")

    assert request.messages[:2] == conversation
    assert request.messages[2] == {"role": "assistant", "content": "Paris."}
    assert request.messages[3] == {"role": "user", "content": VERBALIZED_PROMPT}
    assert request.n == 1 and request.temperature is None


def test_verbalized_confidence_is_a_confidence_not_an_uncertainty() -> None:
    assert "verbalized_confidence" in CONFIDENCE_LIKE_SCORES


# -- in a guarded call ---------------------------------------------------------------


async def test_the_stated_confidence_is_reported_and_its_call_paid_for(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES, verbalized="I'm 85% sure.")

    report = (await run(backend, embedder)).report

    assert report.scores["verbalized_confidence"] == pytest.approx(0.85)
    assert report.method == "inv_entropy"  # an extra score, not the primary one
    [asked] = backend.requests_of("verbalized")
    assert {"role": "assistant", "content": ANSWER} in asked.messages
    # after the reply's round, in a round of its own
    assert [kind_of(r) for r in backend.rounds[-1]] == ["verbalized"]
    assert report.cost.model_calls == backend.calls == 1 + 1 + 3 + 1
    assert not report.degraded


async def test_an_unreadable_answer_gives_a_note_and_no_score(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES, verbalized="eighty")

    result = await run(backend, embedder)

    assert result.text == ANSWER
    assert "verbalized_confidence" not in result.report.scores
    assert result.report.degraded
    assert any("unreadable" in r and "eighty" in r for r in result.report.degraded_reasons)


async def test_a_failed_question_gives_a_note_and_keeps_the_reply(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail("verbalized", ValueError("content filter"), times=None)

    result = await run(backend, embedder)

    assert result.text == ANSWER
    assert "verbalized_confidence" not in result.report.scores
    assert any(
        "verbalized confidence call failed" in r and "content filter" in r
        for r in result.report.degraded_reasons
    )
    assert result.report.cost.model_calls == backend.calls


async def test_it_is_off_by_default(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    report = (await run(backend, embedder, verbalized_confidence=False)).report

    assert backend.requests_of("verbalized") == []
    assert "verbalized_confidence" not in report.scores


async def test_it_rides_along_with_the_second_adaptive_round(embedder) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES, verbalized="40")

    report = (await run(backend, embedder, adaptive=True)).report

    assert report.sampling_rounds == 2
    assert report.scores["verbalized_confidence"] == pytest.approx(0.4)
    assert [kind_of(r) for r in backend.rounds[-1]] == ["sample"] * 3 + ["verbalized"]
    assert len(backend.rounds) == 3  # paraphrase, round 1, round 2 with the question


async def test_it_runs_alone_after_an_early_adaptive_stop(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    report = (await run(backend, embedder, adaptive=True)).report

    assert report.adaptive_stopped_early
    assert report.scores["verbalized_confidence"] == pytest.approx(0.85)
    assert [kind_of(r) for r in backend.rounds[-1]] == ["verbalized"]
