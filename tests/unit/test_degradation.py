"""What degrades a report and what is only a note; the guard is never worse than no guard.

``degraded`` (and ``strict=True`` raising) is for lost information only:
failed samples, failed or short perturbation, no estimate, a failed scoring
step, a calibration that could not apply. Information that loses nothing goes
to ``notes``. A scoring step that fails keeps the user's reply.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.fake_backend import ANSWER, PARAPHRASES, QUESTION, FakeBackend
from uq_guard import DegradedResultError, Guard
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.perturb import PerturbationResult

SMALL = {"n_perturbations": 3, "n_samples": 2, "retry_wait_s": 0.0, "n_bootstrap": 0}


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


class ScriptedPerturber:
    """Returns the given variants (``n_real`` of them real) and notes."""

    def __init__(self, prompts: list[str], *, n_real: int | None = None, notes=()) -> None:
        self.prompts, self.n_real, self.notes = prompts, n_real, list(notes)

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        return PerturbationResult(
            prompts=self.prompts[:m],
            method="scripted",
            n_requested=m,
            notes=list(self.notes),
            n_real=self.n_real,
        )


class FailingEmbedder:
    def encode(self, texts):
        raise RuntimeError("embedding server unreachable")


def guard(backend: FakeBackend, embedder, **config) -> Guard:
    return Guard(backend, embedder=embedder, **{**SMALL, "perturbation": "paraphrase", **config})


# -- notes are not degradation -----------------------------------------------------------


async def test_an_informational_perturbation_note_does_not_degrade(embedder) -> None:
    note = "long prompt: key tokens chosen among its first 64 distinct words"
    perturber = ScriptedPerturber(PARAPHRASES, notes=[note])
    backend = FakeBackend(ANSWER)

    result = await Guard(
        backend, embedder=embedder, perturber=perturber, strict=True, **SMALL
    ).arun(QUESTION)

    assert result.report.notes == [note]
    assert not result.report.degraded and result.report.degraded_reasons == []
    assert result.report.confidence is not None


async def test_a_lexicon_without_substitutes_is_a_note_when_gaap_still_fills_m(embedder) -> None:
    backend = FakeBackend(ANSWER)
    result = await Guard(
        backend, embedder=embedder, gaap_lexicon="none", strict=True, **SMALL
    ).arun("when was the last time anyone was on the moon")
    report = result.report

    assert report.n_perturbations_real == 3  # the frames still make every variant asked for
    assert any("had no substitutes" in note for note in report.notes)
    assert not report.degraded


async def test_fewer_real_perturbations_than_asked_degrade_even_unexplained(embedder) -> None:
    perturber = ScriptedPerturber([*PARAPHRASES[:1]] * 3, n_real=1)

    report = (
        await Guard(FakeBackend(ANSWER), embedder=embedder, perturber=perturber, **SMALL).arun(
            QUESTION
        )
    ).report

    assert report.degraded
    assert report.degraded_reasons == ["1 of 3 perturbations are real variants"]
    with pytest.raises(DegradedResultError, match="1 of 3 perturbations"):
        await Guard(
            FakeBackend(ANSWER), embedder=embedder, perturber=perturber, strict=True, **SMALL
        ).arun(QUESTION)


async def test_a_failed_sample_is_degradation_not_a_note(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[0], ValueError("boom"), times=None)

    report = (await guard(backend, embedder).arun(QUESTION)).report

    assert report.degraded and any("samples failed" in r for r in report.degraded_reasons)
    assert report.notes == []


# -- a failing scoring step keeps the reply -----------------------------------------------


async def test_a_failing_embedder_keeps_the_reply_without_an_estimate() -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)

    result = await guard(backend, FailingEmbedder(), policy="abstain", threshold=1.0).arun(QUESTION)
    report = result.report

    assert result.text == "Paris."
    assert report.decision == "answer"
    assert report.confidence is None and report.uncertainty is None
    assert report.method == "unavailable"
    assert report.degraded
    assert any(
        "scoring failed" in r and "embedding server unreachable" in r
        for r in report.degraded_reasons
    )
    assert report.n_samples == 8 and report.n_failed == 0  # the samples themselves came back


async def test_a_failing_embedder_in_strict_mode_raises_with_the_report() -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)

    with pytest.raises(DegradedResultError, match="scoring failed") as caught:
        await guard(backend, FailingEmbedder(), strict=True).arun(QUESTION)

    assert caught.value.report.reply == "Paris."
    assert caught.value.report.method == "unavailable"


def _raising_similarity(texts: list[str]) -> np.ndarray:
    raise ValueError("similarity service down")


def _wrong_shape_similarity(texts: list[str]) -> np.ndarray:
    return np.ones((2, 3))


def _nan_similarity(texts: list[str]) -> np.ndarray:
    return np.full((len(texts), len(texts)), np.nan)


@pytest.mark.parametrize(
    "similarity", [_raising_similarity, _wrong_shape_similarity, _nan_similarity]
)
async def test_a_bad_user_similarity_keeps_the_reply(embedder, similarity) -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)

    result = await guard(backend, embedder, similarity=similarity).arun(QUESTION)

    assert result.text == "Paris."
    assert result.report.confidence is None and result.report.method == "unavailable"
    assert result.report.degraded
    assert any("scoring failed" in r for r in result.report.degraded_reasons)


async def test_a_failing_embedder_with_adaptive_sampling_keeps_the_reply() -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)

    result = await guard(
        backend, FailingEmbedder(), adaptive=True, n_samples=3, adaptive_first_samples=1
    ).arun(QUESTION)

    assert result.text == "Paris." and result.report.confidence is None
    assert result.report.degraded
