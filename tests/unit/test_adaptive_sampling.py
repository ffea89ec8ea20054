"""Adaptive sampling: stop after round 1 when the answers already agree.

The scripted backend stands in for the model and the real MiniLM embedder
clusters the answers, so the tests see what a user pays (samples, calls,
tokens) and what the report says about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.unit.fake_backend import (
    ANSWER,
    PARAPHRASES,
    QUESTION,
    FakeBackend,
    erratic,
    kind_of,
    prompt_of,
)
from uq_guard import Guard, GuardConfig, GuardResult, UncertaintyReport
from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Generation, GenerationRequest
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder

BUDGET = {"n_perturbations": 3, "n_samples": 4}  # 4 prompts x 4 answers = 16 at most


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


async def run(backend: FakeBackend, embedder: SentenceTransformerEmbedder, **config) -> GuardResult:
    settings = {"perturbation": "paraphrase", "retry_wait_s": 0.0, **BUDGET, **config}
    return await Guard(backend, embedder=embedder, **settings).arun(QUESTION)


def sample_rounds(backend: FakeBackend) -> list[list[GenerationRequest]]:
    """The sample requests of each generate round that had any."""
    rounds = [[r for r in batch if kind_of(r) == "sample"] for batch in backend.rounds]
    return [batch for batch in rounds if batch]


def second_round(request: GenerationRequest) -> bool:
    return kind_of(request) == "sample" and request.seed_offset == 1


# -- agreeing answers stop early ----------------------------------------------


async def test_agreeing_answers_stop_after_round_one_with_fewer_samples(embedder) -> None:
    full_backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    adaptive_backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    full = (await run(full_backend, embedder)).report
    adaptive = (await run(adaptive_backend, embedder, adaptive=True)).report

    assert adaptive.adaptive and adaptive.adaptive_stopped_early
    assert "agreed" in (adaptive.adaptive_stop_reason or "")
    assert adaptive.sampling_rounds == 1
    assert adaptive.n_samples == adaptive.n_samples_requested == 8
    assert adaptive.n_samples_budget == full.n_samples_budget == full.n_samples == 16
    [round_one] = sample_rounds(adaptive_backend)
    assert [prompt_of(r) for r in round_one] == [QUESTION, *PARAPHRASES]
    assert all(r.n == 2 for r in round_one)
    # the same requests, half the answers: fewer sampled tokens
    assert adaptive.cost.model_calls == adaptive_backend.calls == full.cost.model_calls
    assert adaptive.cost.completion_tokens < full.cost.completion_tokens
    assert not adaptive.degraded


async def test_an_early_stop_still_reports_every_score(embedder) -> None:
    full = (await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder)).report
    adaptive = (
        await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder, adaptive=True)
    ).report

    assert adaptive.method == full.method == "inv_entropy"
    assert set(adaptive.scores) == set(full.scores)
    assert adaptive.confidence > 0.9
    assert adaptive.confidence == pytest.approx(full.confidence, abs=0.05)


async def test_the_reply_round_is_still_one_batch(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    await run(backend, embedder, adaptive=True)

    paraphrase_round, round_one = backend.rounds
    assert [kind_of(r) for r in paraphrase_round] == ["paraphrase"]
    assert [kind_of(r) for r in round_one] == ["reply"] + ["sample"] * 4


# -- disagreeing answers use the whole budget -------------------------------------


async def test_disagreeing_answers_draw_the_rest_in_one_more_batched_round(embedder) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)

    report = (await run(backend, embedder, adaptive=True)).report

    assert report.adaptive and not report.adaptive_stopped_early
    assert "did not settle" in (report.adaptive_stop_reason or "")
    assert report.sampling_rounds == 2
    assert report.n_samples == report.n_samples_requested == report.n_samples_budget == 16
    round_one, round_two = sample_rounds(backend)
    assert [prompt_of(r) for r in round_two] == [QUESTION, *PARAPHRASES]
    assert all(r.n == 2 and r.seed_offset == 0 for r in round_one)
    # a reseeding backend must not repeat round 1's draws
    assert all(r.n == 2 and r.seed_offset == 1 for r in round_two)
    assert len(backend.rounds) == 3  # paraphrase, round 1, round 2
    assert report.cost.model_calls == backend.calls == 1 + 1 + 4 + 4
    assert report.method == "inv_entropy"
    assert report.confidence < 0.5
    assert not report.degraded


async def test_a_round_two_that_fails_degrades_the_report_and_keeps_the_reply(embedder) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)
    backend.fail(second_round, ValueError("model overloaded"), times=None)

    result = await run(backend, embedder, adaptive=True)
    report = result.report

    assert result.text == ANSWER
    assert report.sampling_rounds == 2
    assert report.n_samples == 8
    assert report.n_failed == 8
    assert report.n_samples_requested == 16
    assert report.degraded
    assert any("8 of 16 samples failed" in reason for reason in report.degraded_reasons)
    assert report.method == "inv_entropy"
    assert 0.0 <= report.confidence <= 1.0


async def test_a_backend_that_raises_in_round_two_degrades_instead_of_failing(embedder) -> None:
    class BreaksInRoundTwo(FakeBackend):
        async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
            if any(second_round(r) for r in requests):
                self.rounds.append(list(requests))
                self.requests.extend(requests)
                raise PermissionError("quota exhausted")
            return await super().generate(requests)

    backend = BreaksInRoundTwo(erratic, reply=ANSWER, paraphrases=PARAPHRASES)

    result = await run(backend, embedder, adaptive=True)

    assert result.text == ANSWER
    assert result.report.n_samples == 8
    assert result.report.degraded
    assert any("quota exhausted" in r for r in result.report.degraded_reasons)


async def test_a_round_one_that_lost_samples_never_stops_early(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[0], ValueError("bad gateway body"), times=1)

    report = (await run(backend, embedder, adaptive=True)).report

    assert not report.adaptive_stopped_early
    assert "lost 2 of 8" in (report.adaptive_stop_reason or "")
    assert report.sampling_rounds == 2
    assert report.n_samples == 14
    assert report.n_failed == 2
    assert report.degraded


# -- the other rule and the settings ----------------------------------------------


async def test_the_margin_rule_stops_a_call_far_from_the_threshold(embedder) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)

    report = (
        await run(
            backend,
            embedder,
            adaptive=True,
            adaptive_agreement=None,
            adaptive_margin=0.3,
            threshold=0.5,
        )
    ).report

    assert report.adaptive_stopped_early
    assert "from the threshold" in (report.adaptive_stop_reason or "")
    assert report.confidence < 0.2
    assert report.n_samples == 8


async def test_a_partial_agreement_share_is_enough_when_configured(embedder) -> None:
    def mostly_paris(prompt: str, index: int) -> str:
        return "Bananas are rich in potassium." if index == 0 else ANSWER

    strict = (
        await run(
            FakeBackend(mostly_paris, reply=ANSWER, paraphrases=PARAPHRASES),
            embedder,
            adaptive=True,
        )
    ).report
    lenient = (
        await run(
            FakeBackend(mostly_paris, reply=ANSWER, paraphrases=PARAPHRASES),
            embedder,
            adaptive=True,
            adaptive_agreement=0.8,
        )
    ).report

    assert not strict.adaptive_stopped_early and strict.n_samples == 16
    assert lenient.adaptive_stopped_early and lenient.n_samples == 8


async def test_adaptive_is_off_by_default_and_the_report_says_so(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    report = (await run(backend, embedder)).report

    assert GuardConfig().adaptive is False
    assert not report.adaptive and not report.adaptive_stopped_early
    assert report.adaptive_stop_reason is None
    assert report.sampling_rounds == 1
    assert report.n_samples_requested == report.n_samples_budget == 16
    assert all(r.n == 4 for r in backend.requests_of("sample"))


async def test_the_adaptive_report_is_json_clean(embedder) -> None:
    report = (
        await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder, adaptive=True)
    ).report

    assert UncertaintyReport.model_validate_json(report.model_dump_json()) == report


def test_round_one_must_leave_something_for_round_two() -> None:
    with pytest.raises(ConfigurationError, match="adaptive_first_samples=4 must be smaller"):
        GuardConfig(adaptive=True, n_samples=4, adaptive_first_samples=4)

    GuardConfig(adaptive=False, n_samples=2, adaptive_first_samples=4)  # unused when off


def test_adaptive_needs_a_stopping_rule() -> None:
    with pytest.raises(ConfigurationError, match="needs a stopping rule"):
        GuardConfig(adaptive=True, adaptive_agreement=None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("adaptive_agreement", 0.5), ("adaptive_agreement", 1.1), ("adaptive_margin", 0.0)],
)
def test_out_of_range_rule_parameters_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=field):
        GuardConfig(**{field: value})


def test_the_local_model_reseeds_each_round_differently() -> None:
    hf = pytest.importorskip("uq_guard_hf")
    model = hf.HuggingFaceChatModel(model_name="unused", device="cpu", dtype="float32", seed=0)
    base = GenerationRequest(messages=({"role": "user", "content": "hi"},), n=2, temperature=0.7)

    first = model._settings_for(base)
    second = model._settings_for(
        GenerationRequest(messages=base.messages, n=2, temperature=0.7, seed_offset=1)
    )

    assert first.seed_offset == 0 and second.seed_offset == 1
    assert first != second  # different groups, different seeds
