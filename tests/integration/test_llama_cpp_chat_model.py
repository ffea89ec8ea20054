"""The default local model on llama.cpp, with the real SmolLM2: samples, token statistics, parity.

Skipped when ``llama-cpp-python`` is not installed (it is optional: the
default model then runs on transformers).
"""

from __future__ import annotations

import math

import pytest
from langchain_core.messages import AIMessage
from uq_guard_hf import HuggingFaceChatModel, LlamaCppChatModel

from uq_guard.backend import Backend, GenerationRequest
from uq_guard.scoring.whitebox import mean_token_entropy

pytestmark = pytest.mark.slow

QUESTIONS = ("What is the capital of Japan?", "What is 7 times 8?")


def ask(question: str, **fields: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": question},), **fields)


async def test_samples_and_token_statistics(smollm2_llama_cpp: HuggingFaceChatModel) -> None:
    model = smollm2_llama_cpp.model_copy(update={"seed": 0})
    assert isinstance(model, LlamaCppChatModel) and isinstance(model, Backend)
    requests = [ask(q, n=2, temperature=0.7, max_tokens=8, want_logprobs=True) for q in QUESTIONS]

    generations = await model.generate(requests)

    for generation in generations:
        assert generation.ok, generation.error
        assert len(generation.texts) == 2 and all(generation.texts)
        assert generation.token_logprobs is not None and generation.token_entropies is not None
        for logprobs, entropies in zip(
            generation.token_logprobs, generation.token_entropies, strict=True
        ):
            assert 0 < len(logprobs) == len(entropies) <= 8
            assert all(math.isfinite(v) and v <= 1e-6 for v in logprobs)
            assert all(math.isfinite(v) and v >= 0.0 for v in entropies)
        generated = sum(len(lp) for lp in generation.token_logprobs)
        assert generated <= generation.usage.completion_tokens <= generated + 2
        assert generation.usage.prompt_tokens > 0
    # seeded: the same draws again
    again = await model.generate(requests)
    assert [g.texts for g in again] == [g.texts for g in generations]


def test_it_is_a_chat_model_too(smollm2_llama_cpp: HuggingFaceChatModel) -> None:
    reply = smollm2_llama_cpp.invoke(QUESTIONS[0], logprobs=True)
    assert isinstance(reply, AIMessage) and "Tokyo" in str(reply.content)
    tokens = reply.response_metadata["logprobs"]["content"]
    assert tokens and all({"token", "logprob", "entropy"} <= set(t) for t in tokens)


async def test_greedy_replies_and_entropies_match_transformers(
    smollm2_llama_cpp: HuggingFaceChatModel, smollm2: HuggingFaceChatModel
) -> None:
    # The shipped calibration reads the reply's mean token entropy: both
    # engines must hand the scorers the same numbers (the same weights, float16
    # on llama.cpp: about as close as transformers' own float16 on CUDA).
    requests = [ask(q, max_tokens=8, want_logprobs=True) for q in QUESTIONS]
    ours = await smollm2_llama_cpp.generate(requests)
    theirs = await smollm2.generate(requests)
    for a, b in zip(ours, theirs, strict=True):
        assert a.texts == b.texts
        assert a.token_entropies is not None and b.token_entropies is not None
        assert a.token_entropies[0] == pytest.approx(b.token_entropies[0], abs=0.05)
        assert mean_token_entropy(a.token_entropies[0]) == pytest.approx(
            mean_token_entropy(b.token_entropies[0]), abs=0.01
        )
        assert a.token_logprobs is not None and b.token_logprobs is not None
        assert a.token_logprobs[0] == pytest.approx(b.token_logprobs[0], abs=0.05)
