"""``Guard``: the whole perturb -> sample -> embed -> score -> decide pipeline.

A scripted backend (``fake_backend.FakeBackend``) stands in for the model and
the real MiniLM embedder does the embedding, so these tests see what a user
sees: the returned text, the report, and what the certainty cost.
"""

from __future__ import annotations

import asyncio

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
from uq_guard import (
    DegradedResultError,
    Guard,
    GuardConfig,
    GuardResult,
    UncertaintyReport,
)
from uq_guard._exceptions import ConfigurationError, GenerationError
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.perturb import PerturbationResult

FAST = {"retry_wait_s": 0.0}


class RateLimited(Exception):
    """Looks like an SDK's 429 without importing one."""

    status_code = 429

    def __init__(self) -> None:
        super().__init__("429 Too Many Requests")


class BadRequest(Exception):
    status_code = 400


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


def make_guard(backend: FakeBackend, embedder: SentenceTransformerEmbedder, **config) -> Guard:
    # these scenarios script the model's paraphrases (GAAP has its own tests)
    settings = {
        "n_perturbations": 3,
        "n_samples": 4,
        "perturbation": "paraphrase",
        **FAST,
        **config,
    }
    return Guard(backend, embedder=embedder, **settings)


async def run(
    backend: FakeBackend, embedder: SentenceTransformerEmbedder, prompt=QUESTION, **config
) -> GuardResult:
    return await make_guard(backend, embedder, **config).arun(prompt)


# -- the report -------------------------------------------------------------


async def test_report_counts_prompts_samples_and_every_model_call(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    result = await run(backend, embedder, n_perturbations=3, n_samples=4)
    report = result.report

    assert isinstance(report, UncertaintyReport)
    assert result.text == ANSWER
    assert report.reply == ANSWER
    assert report.decision == "answer"
    assert report.method == "inv_entropy"
    assert report.perturbation_method == "paraphrase"
    assert report.perturbations == PARAPHRASES
    assert report.n_perturbations_requested == 3
    assert report.n_prompts == 4
    assert report.n_samples == 16
    assert report.n_failed == 0
    assert not report.degraded
    assert report.degraded_reasons == []
    # one paraphrase request, one reply, one sample request per prompt
    assert backend.calls == 1 + 1 + 4
    assert report.cost.model_calls == backend.calls
    assert report.cost.total_tokens == report.cost.prompt_tokens + report.cost.completion_tokens
    assert report.cost.prompt_tokens == 10 * backend.calls
    assert {"perturb", "generate", "score", "total"} <= set(report.timings_ms)
    assert all(value >= 0 for value in report.timings_ms.values())
    assert report.timings_ms["total"] >= report.timings_ms["score"]
    assert "inv_entropy" in report.scores and "degree" in report.scores


async def test_sample_requests_use_the_configured_budget(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    await run(backend, embedder, n_perturbations=3, n_samples=4, temperature=1.3, max_tokens=77)

    samples = backend.requests_of("sample")
    assert [prompt_of(r) for r in samples] == [QUESTION, *PARAPHRASES]
    assert all(r.n == 4 and r.temperature == 1.3 and r.max_tokens == 77 for r in samples)
    [reply] = backend.requests_of("reply")
    assert reply.n == 1 and reply.temperature is None and prompt_of(reply) == QUESTION


async def test_report_is_json_clean(embedder) -> None:
    result = await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder)

    dumped = result.report.model_dump_json()

    assert UncertaintyReport.model_validate_json(dumped) == result.report


async def test_include_samples_puts_the_answers_in_the_report(embedder) -> None:
    result = await run(
        FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder, n_samples=2, include_samples=True
    )

    assert result.report.samples == [[ANSWER, ANSWER]] * 4


async def test_samples_are_left_out_of_the_report_by_default(embedder) -> None:
    result = await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder)

    assert result.report.samples is None


# -- confidence tracks agreement ---------------------------------------------


async def test_the_same_answer_everywhere_gives_high_confidence(embedder) -> None:
    result = await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder)

    assert result.report.confidence > 0.9


async def test_unrelated_answers_give_clearly_lower_confidence(embedder) -> None:
    consistent = await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder)
    scattered = await run(FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES), embedder)

    assert scattered.report.method == consistent.report.method == "inv_entropy"
    assert scattered.report.confidence < 0.5
    assert scattered.report.confidence < consistent.report.confidence - 0.4
    assert scattered.report.scores["inv_entropy"] > consistent.report.scores["inv_entropy"]


async def test_without_perturbations_confidence_comes_from_degree(embedder) -> None:
    consistent_backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    consistent = await run(consistent_backend, embedder, n_perturbations=0)
    scattered = await run(
        FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES), embedder, n_perturbations=0
    )

    assert consistent.report.method == scattered.report.method == "degree"
    assert consistent_backend.requests_of("paraphrase") == []
    assert consistent_backend.calls == 2  # the reply and one sample request
    assert consistent.report.cost.model_calls == 2
    assert consistent.report.n_prompts == 1
    assert consistent.report.perturbations == []
    assert not consistent.report.degraded
    assert consistent.report.confidence > 0.9
    assert scattered.report.confidence < consistent.report.confidence - 0.2


async def test_perturbation_none_makes_no_paraphrase_call(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    result = await run(backend, embedder, perturbation="none", n_perturbations=9)

    assert backend.requests_of("paraphrase") == []
    assert result.report.perturbation_method == "none"
    assert result.report.perturbations == []
    assert result.report.n_prompts == 1
    assert result.report.method == "degree"
    assert not result.report.degraded


async def test_same_config_seed_and_answers_give_identical_scores(embedder) -> None:
    def guarded() -> Guard:
        backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)
        return make_guard(backend, embedder, seed=7, n_bootstrap=30)

    first = await guarded().arun(QUESTION)
    second = await guarded().arun(QUESTION)

    assert first.report.scores == second.report.scores
    assert first.report.confidence == second.report.confidence


# -- robustness: never worse than no guard ----------------------------------


async def test_some_failed_samples_degrade_the_report_but_keep_the_reply(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[1], ValueError("model overloaded: bad gateway body"), times=None)

    result = await run(backend, embedder, n_perturbations=3, n_samples=4)
    report = result.report

    assert result.text == ANSWER
    assert report.n_failed == 4
    assert report.n_samples == 12
    assert report.degraded
    assert any("4 of 16 samples failed" in reason for reason in report.degraded_reasons)
    assert any("bad gateway body" in reason for reason in report.degraded_reasons)
    assert report.method == "inv_entropy"


async def test_a_partly_answered_sample_request_counts_the_missing_answers(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(QUESTION, BadRequest("content filter"), keep=1)  # not retryable

    result = await run(backend, embedder, n_perturbations=3, n_samples=4)

    assert result.report.n_failed == 3
    assert result.report.n_samples == 13
    assert result.report.degraded
    assert backend.calls_for(QUESTION) == 1  # what came back is kept, not asked again


async def test_one_failed_sample_in_a_good_batch_is_retried_alone(embedder) -> None:
    """A backend without ``n`` makes one call per answer; one of them hit a 429 once."""
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(QUESTION, RateLimited(), times=1, keep=3)

    result = await run(backend, embedder, n_perturbations=3, n_samples=4)
    report = result.report

    assert report.n_failed == 0 and report.n_samples == 16
    assert not report.degraded and report.degraded_reasons == []
    # the paraphrase request, the reply, four sample requests, then one answer again
    assert backend.calls == 1 + 1 + 4 + 1
    assert [r.n for r in backend.requests_of("sample") if prompt_of(r) == QUESTION] == [4, 1]
    assert report.cost.model_calls == backend.calls


async def test_every_sample_failing_still_returns_the_reply(embedder) -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)
    backend.fail("sample", ValueError("boom"), times=None)

    result = await run(
        backend, embedder, n_perturbations=3, n_samples=4, policy="abstain", threshold=1.0
    )
    report = result.report

    assert result.text == "Paris."
    assert report.decision == "answer"
    assert report.n_samples == 0
    assert report.n_failed == 16
    assert report.degraded
    assert any("no uncertainty estimate" in reason for reason in report.degraded_reasons)
    assert report.confidence is None  # not 0.0: no estimate is not "sure it is wrong"


async def test_a_failed_reply_raises_generation_error(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail("reply", BadRequest("context length exceeded"), times=None)

    with pytest.raises(GenerationError, match="context length exceeded") as caught:
        await run(backend, embedder)

    assert isinstance(caught.value.cause, BadRequest)
    assert len(backend.requests_of("reply")) == 1  # a 400 is not retried


async def test_a_rate_limited_reply_is_retried_and_the_retry_is_paid_for(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail("reply", RateLimited(), times=1)

    result = await run(backend, embedder)

    assert result.text == ANSWER
    assert len(backend.requests_of("reply")) == 2
    assert not result.report.degraded
    assert result.report.cost.model_calls == backend.calls == 7


async def test_a_backend_that_raises_as_a_whole_gives_generation_error(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.raise_on_generate = PermissionError("invalid api key")

    with pytest.raises(GenerationError, match="invalid api key"):
        await run(backend, embedder)


async def test_strict_mode_raises_with_the_report_when_a_sample_fails(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[0], ValueError("boom"), times=None)

    with pytest.raises(DegradedResultError, match="samples failed") as caught:
        await run(backend, embedder, strict=True)

    assert caught.value.report.degraded
    assert caught.value.report.n_failed == 4
    assert caught.value.report.reply == ANSWER


async def test_strict_mode_passes_a_clean_call(embedder) -> None:
    result = await run(FakeBackend(ANSWER, paraphrases=PARAPHRASES), embedder, strict=True)

    assert result.text == ANSWER


class BrokenPerturber:
    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        raise RuntimeError("lexicon missing")


async def test_a_perturber_that_raises_degrades_to_samples_only(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    guard = Guard(
        backend,
        embedder=embedder,
        perturber=BrokenPerturber(),
        n_perturbations=3,
        n_samples=4,
        **FAST,
    )

    result = await guard.arun(QUESTION)
    report = result.report

    assert result.text == ANSWER
    assert report.degraded
    assert any("lexicon missing" in reason for reason in report.degraded_reasons)
    assert report.n_prompts == 1
    assert report.perturbations == []
    assert report.method == "degree"
    assert [prompt_of(r) for r in backend.requests_of("sample")] == [QUESTION]


async def test_a_failed_paraphrase_request_degrades_to_samples_only(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail("paraphrase", BadRequest("refused"), times=None)

    result = await run(backend, embedder)

    assert result.text == ANSWER
    assert result.report.method == "degree"
    assert result.report.degraded
    assert any("paraphrase request failed" in r for r in result.report.degraded_reasons)


async def test_fewer_paraphrases_than_asked_are_used_and_reported(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES[:2])

    result = await run(backend, embedder, n_perturbations=4, n_samples=3)
    report = result.report

    assert report.perturbations == PARAPHRASES[:2]
    assert report.n_perturbations_requested == 4
    assert report.n_prompts == 3
    assert report.n_samples == 9
    assert report.method == "inv_entropy"
    assert any("2 of 4" in reason for reason in report.degraded_reasons)
    assert len(backend.requests_of("sample")) == 3


class FixedPerturber:
    def __init__(self, prompts: list[str]) -> None:
        self.prompts = prompts

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        return PerturbationResult(prompts=list(self.prompts), method="fixed", n_requested=m)


async def test_perturbations_beyond_m_empty_or_equal_to_the_prompt_are_dropped(embedder) -> None:
    perturber = FixedPerturber(["", "   ", QUESTION, *PARAPHRASES])
    backend = FakeBackend(ANSWER)
    guard = Guard(
        backend, embedder=embedder, perturber=perturber, n_perturbations=2, n_samples=2, **FAST
    )

    result = await guard.arun(QUESTION)

    assert result.report.perturbations == PARAPHRASES[:2]
    assert result.report.perturbation_method == "fixed"
    assert [prompt_of(r) for r in backend.requests_of("sample")] == [QUESTION, *PARAPHRASES[:2]]


async def test_messages_without_a_user_turn_fail_before_any_model_call(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    with pytest.raises(ConfigurationError):
        await run(backend, embedder, prompt=[{"role": "system", "content": "Be brief."}])

    assert backend.calls == 0


def test_an_object_without_async_generate_is_rejected() -> None:
    class SyncModel:
        def generate(self, requests):
            return []

    with pytest.raises(ConfigurationError, match="async generate"):
        Guard(SyncModel())


def test_config_object_and_keyword_overrides_combine() -> None:
    base = GuardConfig(n_samples=2, threshold=0.4)

    guard = Guard(FakeBackend(), base, threshold=0.8, perturbation="none")

    assert guard.config.n_samples == 2
    assert guard.config.threshold == 0.8
    assert base.threshold == 0.4


def test_the_sync_run_returns_the_same_result(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    result = make_guard(backend, embedder).run(QUESTION)

    assert result.text == ANSWER
    assert result.report.n_prompts == 4
    assert kind_of(backend.requests[0]) == "paraphrase"


async def test_a_rate_limited_sample_is_retried_and_the_report_stays_clean(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[2], RateLimited(), times=2)

    result = await run(backend, embedder)

    assert backend.calls_for(PARAPHRASES[2]) == 3
    assert result.report.n_failed == 0
    assert not result.report.degraded
    assert result.report.cost.model_calls == backend.calls


async def test_a_reply_with_no_text_and_no_error_raises_generation_error(embedder) -> None:
    class Mute(FakeBackend):
        async def generate(self, requests):
            answers = await super().generate(requests)
            for request, answer in zip(requests, answers, strict=True):
                if kind_of(request) == "reply":
                    answer.texts, answer.raw = [], []
            return answers

    with pytest.raises(GenerationError, match="empty response"):
        await run(Mute(ANSWER, paraphrases=PARAPHRASES), embedder)


async def test_concurrent_calls_on_one_guard_do_not_interfere(embedder) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    guard = make_guard(backend, embedder, n_perturbations=2, n_samples=2)

    results = await asyncio.gather(*(guard.arun(QUESTION) for _ in range(3)))

    assert [r.text for r in results] == [ANSWER] * 3
    assert all(r.report.n_prompts == 3 and not r.report.degraded for r in results)
    assert sum(r.report.cost.model_calls for r in results) == backend.calls


async def test_n_samples_one_still_scores(embedder) -> None:
    result = await run(
        FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES), embedder, n_samples=1
    )

    assert result.report.method == "inv_entropy"
    assert result.report.n_samples == 4
    assert 0.0 <= result.report.confidence <= 1.0


async def test_empty_answers_are_real_answers_not_failures(embedder) -> None:
    backend = FakeBackend(lambda prompt, i: "" if i % 2 else ANSWER, paraphrases=PARAPHRASES)

    result = await run(backend, embedder)

    assert result.report.n_failed == 0
    assert result.report.n_samples == 16
    assert not result.report.degraded
    assert 0.0 <= result.report.confidence < 1.0


# -- one scale: one threshold means one thing on every path (ALGORITHMS §2.9) --------

#: Short answers with nothing in common: a model that does not know.
SCATTERED = ("Paris", "a bicycle", "42 degrees", "blue whales sing", "the year 1066")

#: Each way a call is scored: Inv-Entropy (fixed, model-free perturbations or
#: the model's paraphrases) and the sample-only fallback (perturbation="none",
#: n_perturbations=0, or perturbed prompts that got no answer).
PATHS = {
    "fixed-perturbations": ({"perturber": FixedPerturber(PARAPHRASES)}, "inv_entropy"),
    "paraphrase": ({}, "inv_entropy"),
    "perturbation-none": ({"perturbation": "none"}, "degree"),
    "zero-perturbations": ({"n_perturbations": 0}, "degree"),
    "perturbations-unanswered": ({"unanswered": PARAPHRASES}, "degree"),
}


def scattered_model() -> FakeBackend:
    return FakeBackend(
        lambda prompt, i: SCATTERED[i % len(SCATTERED)], reply="Paris", paraphrases=PARAPHRASES
    )


async def run_path(backend: FakeBackend, embedder, path: str) -> GuardResult:
    settings, _ = PATHS[path]
    settings = dict(settings)
    for prompt in settings.pop("unanswered", []):
        backend.fail(prompt, ValueError("no answer"), times=None)
    # the default threshold (0.5) is the one under test
    return await run(backend, embedder, policy="abstain", n_samples=5, **settings)


@pytest.mark.parametrize("path", PATHS)
async def test_abstain_at_the_default_threshold_fires_on_erratic_answers(embedder, path) -> None:
    result = await run_path(scattered_model(), embedder, path)
    report = result.report

    assert report.method == PATHS[path][1]
    assert report.threshold == 0.5
    assert report.confidence < 0.45
    assert report.decision == "abstain"
    assert result.text != "Paris" and report.original_reply == "Paris"


@pytest.mark.parametrize("path", PATHS)
async def test_abstain_at_the_default_threshold_passes_answers_that_agree(embedder, path) -> None:
    result = await run_path(FakeBackend("Paris", paraphrases=PARAPHRASES), embedder, path)
    report = result.report

    assert report.method == PATHS[path][1]
    assert report.confidence > 0.9
    assert report.decision == "answer"
    assert result.text == "Paris"


async def test_with_one_sample_the_fallback_compares_it_with_the_reply(embedder) -> None:
    agree = await run(
        FakeBackend("Paris", reply="It is Paris."), embedder, perturbation="none", n_samples=1
    )
    disagree = await run(
        FakeBackend("a bicycle", reply="Paris"),
        embedder,
        perturbation="none",
        n_samples=1,
        policy="abstain",
    )

    assert agree.report.method == disagree.report.method == "degree"
    assert agree.report.confidence > 0.6
    assert disagree.report.confidence < 0.35
    assert disagree.report.decision == "abstain"


async def test_the_fallback_keeps_the_raw_degree_score(embedder) -> None:
    result = await run(
        scattered_model(), embedder, perturbation="none", n_samples=5, similarity="shifted_cosine"
    )
    scores = result.report.scores

    # Lin et al.'s U_Deg over the samples, unchanged; confidence is not 1 - degree any more
    assert result.report.uncertainty == scores["degree"]
    assert result.report.confidence < 1.0 - scores["degree"] - 0.3


# -- no estimate ----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["annotate", "abstain", "raise", "best_of"])
async def test_no_estimate_reports_none_and_lets_the_reply_through(embedder, policy) -> None:
    backend = FakeBackend(ANSWER, reply="Paris.", paraphrases=PARAPHRASES)
    backend.fail("sample", ValueError("boom"), times=None)

    result = await run(backend, embedder, policy=policy)
    report = result.report

    assert report.confidence is None
    assert report.uncertainty is None
    assert report.method == "unavailable"
    assert report.decision == "answer"
    assert result.text == "Paris."
    assert any("no uncertainty estimate" in reason for reason in report.degraded_reasons)
    assert UncertaintyReport.model_validate_json(report.model_dump_json()) == report
    assert report.model_dump(mode="json")["confidence"] is None
