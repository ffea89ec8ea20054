"""Policies end to end: what the user gets back when confidence is low (or not)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.fake_backend import FakeBackend, erratic
from uq_guard import ConfigurationError, Guard, UncertaintyAbstention, UncertaintyReport
from uq_guard.config import DEFAULT_REFUSAL, POLICIES
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.policies import POLICIES as REGISTRY
from uq_guard.policies import (
    Policy,
    Situation,
    Verdict,
    best_supported,
    planned_decision,
    policy_named,
    wants_action,
)

QUESTION = "What is the capital of France?"
REPLY = "Paris is the capital of France."
PARAPHRASES = [
    "Which city is the capital of France?",
    "What city serves as France's capital?",
    "Name the capital city of France.",
]
REFUSAL = "I would rather not guess."


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


def shaky_model(**kwargs) -> FakeBackend:
    """Answers that agree on nothing: confidence well under 0.5."""
    return FakeBackend(erratic, reply=REPLY, paraphrases=PARAPHRASES, **kwargs)


def steady_model(**kwargs) -> FakeBackend:
    return FakeBackend(REPLY, paraphrases=PARAPHRASES, **kwargs)


def guarded(backend: FakeBackend, embedder, **config) -> Guard:
    # these scenarios script the model's paraphrases (GAAP has its own tests)
    settings = {
        "n_perturbations": 3,
        "n_samples": 3,
        "retry_wait_s": 0.0,
        "perturbation": "paraphrase",
        **config,
    }
    return Guard(backend, embedder=embedder, **settings)


# -- annotate ----------------------------------------------------------------


async def test_annotate_never_changes_the_text(embedder) -> None:
    result = await guarded(shaky_model(), embedder, policy="annotate", threshold=1.0).arun(QUESTION)

    assert result.report.confidence < 1.0
    assert result.text == REPLY
    assert result.report.reply == REPLY
    assert result.decision == "answer"
    assert result.report.original_reply is None


# -- abstain -----------------------------------------------------------------


async def test_abstain_replaces_an_unsure_reply_and_keeps_the_original(embedder) -> None:
    guard = guarded(
        shaky_model(), embedder, policy="abstain", threshold=0.5, abstain_message=REFUSAL
    )

    result = await guard.arun(QUESTION)
    report = result.report

    assert report.confidence < 0.5
    assert result.text == REFUSAL
    assert report.reply == REFUSAL
    assert report.decision == "abstain"
    assert report.abstained
    assert report.original_reply == REPLY
    assert result.reply.texts[0] == REPLY


async def test_abstain_uses_the_default_refusal(embedder) -> None:
    result = await guarded(shaky_model(), embedder, policy="abstain").arun(QUESTION)

    assert result.text == DEFAULT_REFUSAL


async def test_abstain_lets_a_confident_reply_through(embedder) -> None:
    result = await guarded(
        steady_model(), embedder, policy="abstain", threshold=0.5, abstain_message=REFUSAL
    ).arun(QUESTION)

    assert result.report.confidence >= 0.5
    assert result.text == REPLY
    assert result.decision == "answer"
    assert result.report.original_reply is None


# -- raise -------------------------------------------------------------------


async def test_raise_policy_raises_with_the_report_and_the_withheld_reply(embedder) -> None:
    guard = guarded(shaky_model(raw_prefix="native:"), embedder, policy="raise", threshold=0.5)

    with pytest.raises(UncertaintyAbstention) as caught:
        await guard.arun(QUESTION)

    report = caught.value.report
    assert isinstance(report, UncertaintyReport)
    assert report.confidence < 0.5
    assert report.decision == "abstain"
    assert report.original_reply == REPLY
    assert caught.value.reply == "native:" + REPLY  # the backend's own object
    assert f"{report.confidence:.3f}" in str(caught.value)


async def test_raise_policy_with_threshold_zero_never_raises(embedder) -> None:
    result = await guarded(shaky_model(), embedder, policy="raise", threshold=0.0).arun(QUESTION)

    assert result.text == REPLY
    assert result.decision == "answer"


async def test_raise_policy_lets_a_confident_reply_through(embedder) -> None:
    result = await guarded(steady_model(), embedder, policy="raise", threshold=0.5).arun(QUESTION)

    assert result.text == REPLY


# -- fallback ----------------------------------------------------------------


async def test_fallback_returns_the_fallback_models_reply_and_both_reports(embedder) -> None:
    primary = shaky_model()
    backup = FakeBackend("The capital of France is Paris.", paraphrases=PARAPHRASES)
    guard = Guard(
        primary,
        embedder=embedder,
        fallback=backup,
        policy="fallback",
        threshold=0.5,
        n_perturbations=3,
        n_samples=3,
        retry_wait_s=0.0,
    )

    result = await guard.arun(QUESTION)
    report = result.report

    assert result.text == "The capital of France is Paris."
    assert report.decision == "fallback"
    assert report.reply == "The capital of France is Paris."
    assert report.original_reply == REPLY
    assert isinstance(report.fallback, UncertaintyReport)
    assert report.fallback.reply == "The capital of France is Paris."
    assert report.fallback.confidence > report.confidence
    assert result.fallback_reply is not None
    assert result.fallback_reply.texts == ["The capital of France is Paris."]
    assert backup.calls > 0
    # both models' calls are paid for (the perturbations are shared)
    assert report.cost.model_calls == primary.calls + backup.calls


async def test_fallback_is_not_asked_when_the_reply_is_confident(embedder) -> None:
    backup = FakeBackend("Something else.")
    guard = Guard(
        steady_model(),
        embedder=embedder,
        fallback=backup,
        policy="fallback",
        threshold=0.5,
        n_perturbations=3,
        n_samples=3,
        retry_wait_s=0.0,
    )

    result = await guard.arun(QUESTION)

    assert result.text == REPLY
    assert result.report.fallback is None
    assert backup.calls == 0


async def test_a_failing_fallback_keeps_the_original_reply_and_says_why(embedder) -> None:
    backup = FakeBackend("unused").fail(
        "reply", PermissionError("fallback key revoked"), times=None
    )
    guard = Guard(
        shaky_model(),
        embedder=embedder,
        fallback=backup,
        policy="fallback",
        threshold=0.5,
        n_perturbations=3,
        n_samples=3,
        retry_wait_s=0.0,
    )

    result = await guard.arun(QUESTION)
    report = result.report

    assert result.text == REPLY
    assert report.decision == "answer"
    assert report.fallback is None
    assert report.degraded
    assert any("fallback" in r and "fallback key revoked" in r for r in report.degraded_reasons)


def test_fallback_policy_without_a_fallback_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="fallback"):
        Guard(FakeBackend(), policy="fallback")


# -- best_of -----------------------------------------------------------------

AGREEING = [
    "Paris is the capital of France.",
    "The capital of France is Paris.",
    "France's capital city is Paris.",
]
OUTLIER = "Bananas are a good source of potassium."


async def test_best_of_returns_the_most_supported_sample_when_the_reply_is_an_outlier(
    embedder,
) -> None:
    answers = {QUESTION: AGREEING, **dict.fromkeys(PARAPHRASES, AGREEING)}
    backend = FakeBackend(answers, reply=OUTLIER, paraphrases=PARAPHRASES)

    result = await guarded(backend, embedder, policy="best_of", threshold=1.0).arun(QUESTION)
    report = result.report

    assert report.confidence < 1.0
    assert report.decision == "best_of"
    assert result.text in AGREEING
    assert report.reply == result.text
    assert report.original_reply == OUTLIER


async def test_best_of_keeps_a_reply_that_is_already_the_best_supported(embedder) -> None:
    answers = {QUESTION: AGREEING, **dict.fromkeys(PARAPHRASES, AGREEING)}
    backend = FakeBackend(answers, reply=AGREEING[0], paraphrases=PARAPHRASES)

    result = await guarded(backend, embedder, policy="best_of", threshold=1.0).arun(QUESTION)

    assert result.text == AGREEING[0]
    assert result.decision == "answer"
    assert result.report.original_reply is None


# -- the decision rule itself ----------------------------------------------------


@pytest.mark.parametrize("policy", ["annotate", "abstain", "fallback", "raise", "best_of"])
def test_no_policy_acts_at_or_above_the_threshold(policy: str) -> None:
    assert planned_decision(policy, 0.5, 0.5) == "answer"
    assert planned_decision(policy, 0.9, 0.5) == "answer"
    assert not wants_action(0.5, 0.5)


@pytest.mark.parametrize(
    ("policy", "decision"),
    [
        ("annotate", "answer"),
        ("abstain", "abstain"),
        ("raise", "abstain"),
        ("fallback", "fallback"),
        ("best_of", "best_of"),
    ],
)
def test_each_policy_acts_under_the_threshold(policy: str, decision: str) -> None:
    assert planned_decision(policy, 0.49, 0.5) == decision


def test_best_supported_picks_the_most_agreed_candidate() -> None:
    candidates = ["odd one", "a", "a again", "a once more"]

    assert best_supported(candidates, np.array([0.1, 0.8, 0.9, 0.7]), "odd one") == "a again"


def test_best_supported_keeps_the_reply_on_ties_and_when_it_is_best() -> None:
    assert best_supported(["r", "x"], np.array([0.5, 0.5]), "r") is None
    assert best_supported(["r", "x"], np.array([0.9, 0.2]), "r") is None
    assert best_supported(["r", " r "], np.array([0.2, 0.9]), "r") is None  # same text
    assert best_supported(["r"], np.array([1.0]), "r") is None


async def test_confidence_equal_to_the_threshold_is_trusted(embedder) -> None:
    result = await guarded(
        steady_model(), embedder, policy="abstain", threshold=1.0, abstain_message=REFUSAL
    ).arun(QUESTION)

    assert result.report.confidence == 1.0
    assert result.text == REPLY


# -- no estimate: no policy acts --------------------------------------------------


@pytest.mark.parametrize("policy", ["annotate", "abstain", "fallback", "raise", "best_of"])
def test_no_policy_acts_without_an_estimate(policy: str) -> None:
    assert planned_decision(policy, None, 0.5) == "answer"
    assert planned_decision(policy, None, 1.0) == "answer"
    assert not wants_action(None, 1.0)


async def test_fallback_is_not_asked_when_there_is_no_estimate(embedder) -> None:
    primary = FakeBackend(REPLY, paraphrases=PARAPHRASES).fail(
        "sample", ValueError("boom"), times=None
    )
    backup = FakeBackend("Something else.")
    guard = Guard(
        primary,
        embedder=embedder,
        fallback=backup,
        policy="fallback",
        threshold=1.0,
        perturbation="none",
        n_samples=3,
        retry_wait_s=0.0,
    )

    result = await guard.arun(QUESTION)

    assert result.report.confidence is None
    assert result.text == REPLY
    assert result.decision == "answer"
    assert result.report.fallback is None
    assert backup.calls == 0


# -- each policy alone: a Situation in, a Verdict out (no model, no embedder) ---------


def situation(confidence: float | None, **fields) -> Situation:
    return Situation(
        reply=REPLY, confidence=confidence, threshold=0.5, abstain_message=REFUSAL, **fields
    )


def test_every_policy_guardconfig_accepts_decides_and_acts_in_the_registry() -> None:
    assert tuple(REGISTRY) == POLICIES
    for name in POLICIES:
        policy = policy_named(name)
        assert isinstance(policy, Policy) and policy.name == name
    with pytest.raises(ConfigurationError, match="unknown policy 'maybe'"):
        policy_named("maybe")


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("confidence", [0.5, 0.9, None])
async def test_a_trusted_or_unscored_reply_passes_every_policy(name: str, confidence) -> None:
    async def never() -> str:
        raise AssertionError("the fallback model must not be asked")

    verdict = await policy_named(name).decide(situation(confidence, ask_fallback=never))

    assert verdict == Verdict("answer", REPLY)


@pytest.mark.parametrize(("name", "raises"), [("abstain", False), ("raise", True)])
async def test_abstain_and_raise_return_the_refusal_and_keep_the_reply(name, raises) -> None:
    verdict = await policy_named(name).decide(situation(0.2))

    assert verdict == Verdict("abstain", REFUSAL, original_reply=REPLY, raises=raises)


async def test_annotate_returns_an_untrusted_reply_as_it_is() -> None:
    assert await policy_named("annotate").decide(situation(0.0)) == Verdict("answer", REPLY)


async def test_fallback_returns_the_fallback_answer_asked_once() -> None:
    asked = []
    answer = type("Answer", (), {"text": "Lima."})()

    async def ask():
        asked.append(1)
        return answer

    verdict = await policy_named("fallback").decide(situation(0.2, ask_fallback=ask))

    assert verdict == Verdict("fallback", "Lima.", original_reply=REPLY, fallback=answer)
    assert asked == [1]


async def test_a_failed_fallback_keeps_the_reply_and_degrades() -> None:
    async def ask() -> str:
        return "fallback model failed, original reply kept: boom"

    verdict = await policy_named("fallback").decide(situation(0.2, ask_fallback=ask))

    assert verdict.decision == "answer" and verdict.text == REPLY
    assert verdict.degraded_reasons == ("fallback model failed, original reply kept: boom",)
    with pytest.raises(ConfigurationError, match="fallback model"):
        await policy_named("fallback").decide(situation(0.2))


async def test_best_of_returns_the_best_supported_sample_or_the_reply() -> None:
    best_of = policy_named("best_of")
    outlier = situation(
        0.2, candidates=[REPLY, "Lima.", "Lima!"], support=np.array([0.1, 0.9, 0.8])
    )
    supported = situation(0.2, candidates=[REPLY, "Lima."], support=np.array([0.9, 0.1]))

    assert await best_of.decide(outlier) == Verdict("best_of", "Lima.", original_reply=REPLY)
    assert await best_of.decide(supported) == Verdict("answer", REPLY)
