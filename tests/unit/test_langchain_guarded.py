"""GuardedChatModel with scripted inner models and the real MiniLM embedder."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from uq_guard_langchain import GuardedChatModel

import uq_guard
from tests.unit.lc_fakes import ScriptedChatModel, erratic, steady
from uq_guard import GenerationError, UncertaintyAbstention, UnsupportedModelError
from uq_guard.embeddings import shared_embedder

PARAPHRASES = [
    "What's the capital city of France?",
    "Which city is France's capital?",
    "Name the capital of France.",
]
UNRELATED = [
    "Bananas are rich in potassium.",
    "The stock market fell sharply today.",
    "Quantum entanglement links particles.",
    "My cat sleeps all afternoon.",
    "Volcanoes erupt molten rock.",
]
# these scenarios script the model's paraphrases (GAAP has its own tests)
SMALL = {"n_perturbations": 3, "n_samples": 4, "perturbation": "paraphrase"}


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def guarded(responder, embedder, **settings: Any) -> GuardedChatModel:
    inner = ScriptedChatModel(respond=responder, paraphrases=PARAPHRASES)
    return GuardedChatModel(model=inner, embedder=embedder, **{**SMALL, **settings})


def report_of(message: AIMessage) -> dict[str, Any]:
    return message.response_metadata["uq_guard"]


def test_invoke_returns_the_inner_reply_with_a_report(embedder):
    chat = guarded(steady("Paris is the capital of France."), embedder)
    message = chat.invoke("What is the capital of France?")
    assert isinstance(message, AIMessage)
    assert message.content == "Paris is the capital of France."
    report = report_of(message)
    assert report["decision"] == "answer"
    assert report["method"] == "inv_entropy"
    assert report["n_prompts"] == 4 and report["n_samples"] == 16
    assert report["perturbations"] == PARAPHRASES
    uq_guard.UncertaintyReport.model_validate(report)  # JSON-clean round trip


def test_steady_answers_are_more_confident_than_erratic_ones(embedder):
    sure = report_of(guarded(steady("Paris."), embedder).invoke("Capital of France?"))
    unsure = report_of(guarded(erratic(UNRELATED), embedder).invoke("Capital of France?"))
    assert sure["confidence"] > unsure["confidence"] + 0.3
    assert sure["scores"]["inv_entropy"] < unsure["scores"]["inv_entropy"]
    assert sure["scores"]["semantic_entropy"] < unsure["scores"]["semantic_entropy"]


def test_usage_metadata_sums_every_call(embedder):
    chat = guarded(steady("Paris is the capital."), embedder)
    message = chat.invoke("What is the capital of France?")
    calls = chat.model.calls
    # 1 reply + 1 paraphrase request + 4 prompts x 4 samples
    assert len(calls) == 18
    assert report_of(message)["cost"]["model_calls"] == 18
    assert message.usage_metadata["total_tokens"] == report_of(message)["cost"]["total_tokens"]
    assert message.usage_metadata["output_tokens"] == sum(
        len(m.split()) for m in ["Paris is the capital."] * 17 + ["\n".join(PARAPHRASES)]
    )


def test_samples_use_the_sampling_temperature_and_the_reply_does_not(embedder):
    chat = guarded(steady("Paris."), embedder, temperature=0.9)
    chat.invoke("Capital of France?")
    temperatures = [c["temperature"] for c in chat.model.calls]
    assert temperatures.count(0.0) == 1  # the reply, at the user's own setting
    assert temperatures.count(0.9) == len(temperatures) - 1


def test_abstain_replaces_the_reply_and_keeps_the_original(embedder):
    chat = guarded(
        erratic(UNRELATED),
        embedder,
        policy="abstain",
        threshold=0.9,
        abstain_message="I can't say.",
    )
    message = chat.invoke("Capital of France?")
    report = report_of(message)
    assert message.content == "I can't say."
    assert report["decision"] == "abstain"
    assert report["original_reply"] == UNRELATED[0]


def test_raise_policy_works_with_langchain_fallbacks(embedder):
    chat = guarded(erratic(UNRELATED), embedder, policy="raise", threshold=0.9)
    with pytest.raises(UncertaintyAbstention) as caught:
        chat.invoke("Capital of France?")
    assert caught.value.report.decision == "abstain"
    assert isinstance(caught.value.reply, AIMessage)
    assert caught.value.reply.content == UNRELATED[0]

    backup = RunnableLambda(lambda _: AIMessage(content="ask a human"))
    safe = chat.with_fallbacks([backup], exceptions_to_handle=(UncertaintyAbstention,))
    assert safe.invoke("Capital of France?").content == "ask a human"


def test_fallback_policy_returns_the_fallback_reply_with_both_reports(embedder):
    fallback = ScriptedChatModel(respond=steady("Paris."), paraphrases=PARAPHRASES)
    chat = guarded(
        erratic(UNRELATED), embedder, policy="fallback", threshold=0.9, fallback=fallback
    )
    message = chat.invoke("Capital of France?")
    report = report_of(message)
    assert message.content == "Paris."
    assert report["decision"] == "fallback"
    assert report["fallback"]["confidence"] > report["confidence"]
    assert fallback.calls  # the fallback model really ran


def test_fallback_policy_without_a_fallback_model_is_refused():
    with pytest.raises(ValueError, match="fallback"):
        GuardedChatModel(model=ScriptedChatModel(respond=steady("x")), policy="fallback")


def test_best_of_returns_the_most_supported_sample(embedder):
    def responder(prompt, temperature, rng):
        if temperature == 0:
            return "Volcanoes erupt molten rock."  # the greedy reply is the odd one out
        return rng.choice(["Paris.", "Paris.", "Paris is the capital.", "It is Paris."])

    chat = guarded(responder, embedder, policy="best_of", threshold=1.0)
    message = chat.invoke("Capital of France?")
    assert report_of(message)["decision"] == "best_of"
    assert "Paris" in message.content
    assert report_of(message)["original_reply"] == "Volcanoes erupt molten rock."


def test_misspelt_and_invalid_settings_fail_at_construction():
    inner = ScriptedChatModel(respond=steady("x"))
    with pytest.raises(ValueError, match="treshold"):
        GuardedChatModel(model=inner, treshold=0.3)
    with pytest.raises(ValueError, match="threshold"):
        GuardedChatModel(model=inner, threshold=1.5)
    with pytest.raises(ValueError, match="policy"):
        GuardedChatModel(model=inner, policy="abstian")


def test_stream_decides_first_and_puts_the_report_on_the_last_chunk(embedder):
    chat = guarded(steady("Paris is the capital of France."), embedder)
    chunks = list(chat.stream("Capital of France?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == "Paris is the capital of France."
    assert len(chunks) > 2
    assert all("uq_guard" not in c.response_metadata for c in chunks[:-1])
    assert chunks[-1].response_metadata["uq_guard"]["decision"] == "answer"


async def test_astream_and_ainvoke(embedder):
    chat = guarded(steady("Paris is the capital."), embedder, policy="abstain", threshold=0.0)
    message = await chat.ainvoke("Capital of France?")
    assert report_of(message)["decision"] == "answer"
    chunks = [c async for c in chat.astream("Capital of France?")]
    assert "".join(c.content for c in chunks) == "Paris is the capital."
    assert "uq_guard" in chunks[-1].response_metadata


def test_batch_and_abatch_guard_each_input(embedder):
    chat = guarded(steady("Paris."), embedder)
    results = chat.batch(["Capital of France?", "Largest city of France?"])
    assert [report_of(m)["decision"] for m in results] == ["answer", "answer"]
    results = asyncio.run(chat.abatch(["Capital of France?"]))
    assert report_of(results[0])["n_samples"] == 16


def test_sync_invoke_inside_a_running_event_loop(embedder):
    chat = guarded(steady("Paris."), embedder)

    async def notebook_cell():
        return chat.invoke("Capital of France?")  # sync call while a loop runs

    assert asyncio.run(notebook_cell()).content == "Paris."


def test_a_chain_of_prompt_guarded_model_and_parser(embedder):
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer briefly."), ("human", "What is the capital of {country}?")]
    )
    chain = prompt | guarded(steady("Paris."), embedder) | StrOutputParser()
    assert chain.invoke({"country": "France"}) == "Paris."


def test_conversation_history_travels_unchanged_with_every_sample(embedder):
    chat = guarded(steady("Paris."), embedder)
    chat.invoke(
        [
            SystemMessage("Be brief."),
            HumanMessage("Hi"),
            AIMessage("Hello!"),
            HumanMessage("Capital of France?"),
        ]
    )
    prompts = {c["prompt"] for c in chat.model.calls}
    assert "Capital of France?" in prompts
    assert set(PARAPHRASES) <= prompts


def test_bind_tools_delegates_and_tool_call_replies_survive(embedder):
    tool_reply = AIMessage(
        content="",
        tool_calls=[
            {"name": "lookup", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
        ],
    )
    chat = guarded(lambda p, t, r: tool_reply, embedder)

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    bound = chat.bind_tools([lookup])
    assert isinstance(bound.bound, GuardedChatModel)
    message = bound.invoke("Capital of France?")
    assert message.tool_calls[0]["name"] == "lookup"
    assert all(c["kwargs"].get("tools") == ["lookup"] for c in chat.model.calls)
    chunks = list(bound.stream("Capital of France?"))
    assert chunks[-1].tool_call_chunks[0]["name"] == "lookup"


def test_samples_bypass_the_llm_cache_but_the_reply_may_use_it(embedder):
    inner = ScriptedChatModel(
        respond=erratic(UNRELATED), paraphrases=PARAPHRASES, cache=InMemoryCache()
    )
    chat = GuardedChatModel(model=inner, embedder=embedder, **SMALL)
    chat.invoke("Capital of France?")
    first = len(inner.calls)
    chat.invoke("Capital of France?")
    # the reply came from the cache the second time; every sample was a real call
    assert len(inner.calls) - first == first - 1


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[tuple[UUID, UUID | None, list[str]]] = []

    def on_chat_model_start(
        self, serialized, messages, *, run_id, parent_run_id=None, tags=None, **kwargs
    ):
        self.starts.append((run_id, parent_run_id, tags or []))


def test_inner_calls_nest_under_the_guarded_run_in_callbacks(embedder):
    recorder = RunRecorder()
    chat = guarded(steady("Paris."), embedder)
    chat.invoke("Capital of France?", config={"callbacks": [recorder]})
    outer = [run for run in recorder.starts if run[1] is None]
    assert len(outer) == 1
    children = [run for run in recorder.starts if run[1] == outer[0][0]]
    assert len(children) == 18
    assert sum("uq_guard:sample" in tags for _, _, tags in children) == 17


def test_failed_samples_degrade_the_report_not_the_reply(embedder):
    def fail(prompt, temperature):
        return ValueError("bad sample") if temperature > 0 and "Name" in prompt else None

    inner = ScriptedChatModel(respond=steady("Paris."), paraphrases=PARAPHRASES, fail_when=fail)
    chat = GuardedChatModel(model=inner, embedder=embedder, max_retries=0, **SMALL)
    message = chat.invoke("Capital of France?")
    report = report_of(message)
    assert message.content == "Paris."
    assert report["n_failed"] == 4
    assert report["degraded"] and any("bad sample" in r for r in report["degraded_reasons"])


def test_no_estimate_puts_none_in_the_metadata_and_keeps_the_reply(embedder):
    inner = ScriptedChatModel(
        respond=steady("Paris."),
        paraphrases=PARAPHRASES,
        fail_when=lambda p, t: ValueError("bad sample") if t > 0 else None,
    )
    chat = GuardedChatModel(
        model=inner, embedder=embedder, max_retries=0, policy="raise", threshold=1.0, **SMALL
    )
    message = chat.invoke("Capital of France?")
    report = report_of(message)
    assert message.content == "Paris."
    assert report["confidence"] is None and report["uncertainty"] is None
    assert report["decision"] == "answer" and report["method"] == "unavailable"
    uq_guard.UncertaintyReport.model_validate(report)


def test_a_failed_reply_raises_a_clear_error(embedder):
    inner = ScriptedChatModel(
        respond=steady("Paris."),
        paraphrases=PARAPHRASES,
        fail_when=lambda p, t: ValueError("boom") if t == 0 else None,
    )
    chat = GuardedChatModel(model=inner, embedder=embedder, max_retries=0, **SMALL)
    with pytest.raises(GenerationError, match="boom"):
        chat.invoke("Capital of France?")


def test_guard_wraps_langchain_models_and_refuses_other_objects(embedder):
    chat = uq_guard.guard(ScriptedChatModel(respond=steady("x")), policy="abstain")
    assert isinstance(chat, GuardedChatModel)
    assert chat.guard_config.policy == "abstain"
    with pytest.raises(UnsupportedModelError, match=r"cannot wrap a builtins\.dict"):
        uq_guard.guard({"not": "a model"})
