"""HuggingFaceChatModel with the real SmolLM2-135M-Instruct: as a Backend and as a chat model."""

from __future__ import annotations

import math

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import LLMResult
from uq_guard_hf import HuggingFaceChatModel, default_model_path

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Backend, Generation, GenerationRequest

pytestmark = pytest.mark.slow

JAPAN = "What is the capital of Japan?"
LONG_PROMPT = (
    "I am planning a two-week trip through several countries in Europe next spring, "
    "starting in Lisbon and ending in Vienna, with stops in Madrid, Barcelona, Lyon, "
    "Geneva, Zurich, Munich and Salzburg along the way. I would like to travel by train "
    "where I can. Which of these legs would you expect to be the longest by rail, and why?"
)


def ask(question: str, **fields: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": question},), **fields)


def assert_logprobs_and_entropies_are_sane(generation: Generation) -> None:
    assert generation.token_logprobs is not None
    assert generation.token_entropies is not None
    assert len(generation.token_logprobs) == len(generation.texts)
    assert len(generation.token_entropies) == len(generation.texts)
    for text, logprobs, entropies in zip(
        generation.texts, generation.token_logprobs, generation.token_entropies, strict=True
    ):
        assert len(logprobs) == len(entropies)
        if text:
            assert logprobs
        assert all(math.isfinite(value) and value <= 1e-6 for value in logprobs)
        assert all(math.isfinite(value) and value >= 0.0 for value in entropies)


async def test_the_model_is_a_backend(smollm2: HuggingFaceChatModel) -> None:
    assert isinstance(smollm2, Backend)
    assert await smollm2.generate([]) == []
    (by_keyword,) = await smollm2.generate(requests=[ask(JAPAN, max_tokens=4)])
    assert by_keyword.ok


def test_langchain_generate_and_stream_still_work(smollm2: HuggingFaceChatModel) -> None:
    # Backend.generate and BaseChatModel.generate share a name; both must keep working.
    result = smollm2.generate([[HumanMessage(JAPAN)]])
    assert isinstance(result, LLMResult)
    assert "Tokyo" in result.generations[0][0].text

    streamed = "".join(str(chunk.content) for chunk in smollm2.stream(JAPAN))
    assert "Tokyo" in streamed


async def test_batched_sampling_gives_n_answers_per_prompt_with_token_statistics(
    smollm2: HuggingFaceChatModel,
) -> None:
    questions = [JAPAN, "What is 7 times 8?", "Name a primary colour."]
    requests = [
        ask(question, n=4, temperature=0.7, max_tokens=32, want_logprobs=True)
        for question in questions
    ]

    generations = await smollm2.model_copy(update={"seed": 0}).generate(requests)

    assert len(generations) == 3
    for generation in generations:
        assert generation.ok, generation.error
        assert len(generation.texts) == 4
        assert all(isinstance(text, str) and text for text in generation.texts)
        assert generation.raw == generation.texts
        assert_logprobs_and_entropies_are_sane(generation)
        assert generation.usage.model_calls == 1
        assert generation.usage.prompt_tokens > 0
        generated_tokens = sum(len(logprobs) for logprobs in generation.token_logprobs or [])
        # Each answer may also have spent its end-of-sequence token.
        assert generated_tokens <= generation.usage.completion_tokens <= generated_tokens + 4


async def test_logprobs_come_from_the_raw_logits_not_the_sampler(
    smollm2: HuggingFaceChatModel,
) -> None:
    greedy, sampled = await smollm2.model_copy(update={"seed": 0}).generate(
        [
            ask(JAPAN, want_logprobs=True),
            ask(JAPAN, n=6, temperature=0.3, want_logprobs=True),
        ]
    )
    assert greedy.ok and sampled.ok
    greedy_text = greedy.texts[0]
    # At T=0.3 the greedy answer is by far the likeliest sample.
    assert greedy_text in sampled.texts
    sampled_logprobs = (sampled.token_logprobs or [])[sampled.texts.index(greedy_text)]
    greedy_logprobs = (greedy.token_logprobs or [])[0]
    # Temperature reshapes the sampling distribution, not the reported one:
    # the same tokens get the same (temperature-1) log-probabilities.
    assert sampled_logprobs == pytest.approx(greedy_logprobs, abs=1e-3)


async def test_greedy_decoding_is_deterministic(smollm2: HuggingFaceChatModel) -> None:
    requests = [
        ask(JAPAN, want_logprobs=True),
        ask("Name a primary colour.", max_tokens=24, want_logprobs=True),
    ]

    first = await smollm2.generate(requests)
    second = await smollm2.generate(requests)

    assert [g.texts for g in first] == [g.texts for g in second]
    assert [g.token_logprobs for g in first] == [g.token_logprobs for g in second]


async def test_greedy_with_n_returns_n_copies_of_the_one_answer(
    smollm2: HuggingFaceChatModel,
) -> None:
    (generation,) = await smollm2.generate([ask(JAPAN, n=3, temperature=0.0)])

    assert generation.ok
    assert len(generation.texts) == 3
    assert len(set(generation.texts)) == 1


async def test_greedy_answer_to_the_capital_of_japan_names_tokyo(
    smollm2: HuggingFaceChatModel,
) -> None:
    (generation,) = await smollm2.generate([ask(JAPAN)])

    assert generation.ok
    assert "Tokyo" in generation.texts[0]


async def test_seeded_sampling_is_reproducible(smollm2: HuggingFaceChatModel) -> None:
    seeded = smollm2.model_copy(update={"seed": 1234})
    requests = [ask("Name a primary colour.", n=3, temperature=1.0, max_tokens=16)]

    first = await seeded.generate(requests)
    second = await seeded.generate(requests)

    assert first[0].texts == second[0].texts


async def test_bad_requests_fail_alone_and_the_rest_of_the_batch_is_answered(
    smollm2: HuggingFaceChatModel,
) -> None:
    requests = [
        GenerationRequest(messages=()),
        GenerationRequest(messages=({"role": "user"},)),
        GenerationRequest(messages=({"role": "wizard", "content": "hi"},)),
        ask(JAPAN, n=0),
        ask(JAPAN),
    ]

    generations = await smollm2.generate(requests)

    assert len(generations) == len(requests)
    for failed in generations[:4]:
        assert not failed.ok
        assert isinstance(failed.error, ConfigurationError)
    assert generations[4].ok
    assert "Tokyo" in generations[4].texts[0]


async def test_left_padding_does_not_change_a_short_prompts_greedy_answer(
    smollm2: HuggingFaceChatModel,
) -> None:
    # The short answer ("The capital of Japan is Tokyo.") is 8 tokens long.
    (alone,) = await smollm2.generate([ask(JAPAN, max_tokens=16)])
    _, padded = await smollm2.generate([ask(LONG_PROMPT, max_tokens=16), ask(JAPAN, max_tokens=16)])

    assert padded.ok
    assert padded.texts == alone.texts


def test_invoke_returns_an_ai_message_with_usage(smollm2: HuggingFaceChatModel) -> None:
    reply = smollm2.invoke(JAPAN)

    assert isinstance(reply, AIMessage)
    assert "Tokyo" in reply.content
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["model_name"] == smollm2.model_name


def test_invoke_takes_a_conversation_and_can_report_logprobs(
    smollm2: HuggingFaceChatModel,
) -> None:
    reply = smollm2.invoke(
        [SystemMessage("Answer in one short sentence."), HumanMessage(JAPAN)], logprobs=True
    )

    token_entries = reply.response_metadata["logprobs"]["content"]
    assert token_entries
    assert "".join(entry["token"] for entry in token_entries).strip() == reply.content
    assert all(entry["logprob"] <= 1e-6 for entry in token_entries)


def test_invoke_cuts_the_reply_at_a_stop_string(smollm2: HuggingFaceChatModel) -> None:
    question = "Count from 1 to 10, separated by commas."
    unstopped = smollm2.invoke(question)
    assert "5" in unstopped.content  # the premise: the model does count past 4

    stopped = smollm2.invoke(question, stop=["5"])

    assert stopped.content
    assert "5" not in stopped.content
    assert unstopped.content.startswith(stopped.content.strip())
    assert stopped.response_metadata["finish_reason"] == "stop"


def test_invoke_rejects_an_unknown_call_option(smollm2: HuggingFaceChatModel) -> None:
    with pytest.raises(ConfigurationError, match="top_q"):
        smollm2.invoke(JAPAN, top_q=0.5)


async def test_ainvoke_and_model_copy_share_the_loaded_weights(
    smollm2: HuggingFaceChatModel,
) -> None:
    sampler = smollm2.model_copy(update={"temperature": 0.7, "seed": 7, "max_tokens": 16})
    assert sampler._runtime is smollm2._runtime

    first = await sampler.ainvoke("Name a primary colour.")
    second = await sampler.ainvoke("Name a primary colour.")

    assert isinstance(first, AIMessage)
    assert first.content == second.content
    assert smollm2.temperature is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_batched_generation_on_cuda() -> None:
    model = HuggingFaceChatModel.from_pretrained(default_model_path(), device="cuda")
    assert model.dtype == "float16"
    requests = [
        ask(JAPAN, n=4, temperature=0.7, max_tokens=32, want_logprobs=True),
        ask("What is 7 times 8?", n=4, temperature=0.7, max_tokens=32, want_logprobs=True),
        ask(JAPAN, want_logprobs=True),
    ]

    generations = await model.generate(requests)

    for generation in generations:
        assert generation.ok, generation.error
        assert_logprobs_and_entropies_are_sane(generation)
    assert "Tokyo" in generations[2].texts[0]


async def test_the_real_model_can_grade_as_a_judge(smollm2: HuggingFaceChatModel) -> None:
    from uq_guard.evaluation.judge import ModelJudge, parse_verdict

    judge = ModelJudge(smollm2)
    cases = [
        ("What is the capital of Japan?", "Tokyo is the capital.", ["Tokyo"]),
        ("What is 7 times 8?", "It is 54.", ["56"]),
    ]
    verdicts = [await judge.ajudge(*case) for case in cases]
    # greedy, so the grader's own words can be read back; a 135M grader is no oracle
    # (it says "No" to Tokyo): the contract is that its yes/no is read, and the rest counted
    said = [(await smollm2.generate([judge.request(*case)]))[0].texts[0] for case in cases]
    assert verdicts == [parse_verdict(text) is True for text in said]
    assert judge.n_asked == 2
    assert judge.n_unreadable == sum(parse_verdict(text) is None for text in said)
