"""The whole pipeline on the real SmolLM2: GAAP, batched sampling, MiniLM, Inv-Entropy, policy."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from uq_guard_hf import HuggingFaceChatModel
from uq_guard_langchain import GuardedChatModel

pytestmark = pytest.mark.slow

STEADY = "What is the capital of Japan?"  # SmolLM2 says Tokyo, however it is asked
ERRATIC = "What is 7 times 8?"  # SmolLM2 says 54, 56, 15, a formula...
# the label-free confidence: no shipped calibration
BUDGET = {"n_perturbations": 9, "n_samples": 5, "max_tokens": 32, "calibration": None}


@pytest.fixture
def seeded(smollm2: HuggingFaceChatModel) -> HuggingFaceChatModel:
    """SmolLM2 with reproducible sampling (the same weights, shared)."""
    return smollm2.model_copy(update={"seed": 0})


def confidence(chat: GuardedChatModel, question: str) -> float:
    report = chat.invoke(question).response_metadata["uq_guard"]
    assert report["method"] == "inv_entropy"
    assert report["perturbation_method"] == "gaap"
    assert report["n_failed"] == 0 and not report["degraded"]
    return float(report["confidence"])


def test_a_steadily_answered_question_gets_clearly_higher_confidence_than_an_erratic_one(
    smollm2: HuggingFaceChatModel,
) -> None:
    steady, erratic = [], []
    for seed in (0, 1, 2):  # different perturbations and different samples
        sampler = smollm2.model_copy(update={"seed": seed})
        chat = GuardedChatModel(model=sampler, seed=seed, **BUDGET)
        steady.append(confidence(chat, STEADY))
        erratic.append(confidence(chat, ERRATIC))

    # measured: about 0.56 against 0.43 (5 seeds, every one in this order)
    assert min(steady) > max(erratic), (steady, erratic)
    assert sum(steady) / 3 > sum(erratic) / 3 + 0.08, (steady, erratic)


def test_abstain_policy_replaces_the_erratic_answer_and_keeps_the_original(
    seeded: HuggingFaceChatModel,
) -> None:
    # the bundled model's shipped calibration (P(correct)) and the sampling budget and system
    # message it was fitted with, under the stricter "more likely wrong than right" rule: at the
    # shipped base-rate threshold (0.12) SmolLM2's confident wrong products such as "54" pass
    assert seeded.guard_defaults["calibration"]
    assert seeded.guard_defaults["threshold"] < 0.5
    chat = GuardedChatModel(model=seeded, policy="abstain", threshold=0.5)
    system = SystemMessage("Answer in a few words.")

    steady = chat.invoke([system, HumanMessage(STEADY)])
    erratic = chat.invoke([system, HumanMessage(ERRATIC)])

    assert isinstance(erratic, AIMessage)
    assert "Tokyo" in steady.content
    steady_report = steady.response_metadata["uq_guard"]
    assert steady_report["calibrated"] and steady_report["decision"] == "answer"
    report = erratic.response_metadata["uq_guard"]
    assert report["calibrated"] and not report["degraded"]
    assert report["decision"] == "abstain"
    assert erratic.content == report["reply"] != report["original_reply"]
    assert report["original_reply"]
    # every call of the guarded reply is counted, samples included
    assert erratic.usage_metadata["total_tokens"] == report["cost"]["total_tokens"] > 0
