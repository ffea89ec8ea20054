"""Guarded streaming through ``wrap_openai``: the real openai client against real llama.cpp.

``llama_cpp.server`` serves SmolLM2's GGUF on 127.0.0.1 (the ``llama_server``
fixture). The reply is greedy (``temperature=0``), so a streamed guarded reply
and a non-streamed one for the same settings must carry the same text; under
``policy="abstain"`` the refusal streams and the model's withdrawn reply never
does. The report rides on the finishing chunk.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from uq_guard_openai import wrap_openai

from uq_guard import GuardConfig, UncertaintyReport

pytestmark = pytest.mark.slow

SMALL = {"n_perturbations": 0, "perturbation": "none", "n_samples": 2, "max_tokens": 24}
JAPAN = [{"role": "user", "content": "What is the capital of Japan?"}]
REPLY = {"model": "smollm2", "messages": JAPAN, "max_tokens": 24, "temperature": 0}
# Samples at a high temperature from a 135M model never all match the reply:
# confidence < 1.0, so threshold=1.0 always abstains.
SURE_TO_ABSTAIN = {"policy": "abstain", "threshold": 1.0, "temperature": 1.5}


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def check_stream(chunks: list[Any], *, usage: bool) -> UncertaintyReport:
    """The proxy's stream contract; returns the report of the finishing chunk."""
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    final = chunks[-2] if usage else chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    report = final.uncertainty
    assert isinstance(report, UncertaintyReport)
    assert report.n_samples == 2 and report.n_failed == 0
    if usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage.total_tokens == report.cost.total_tokens > 0
    return report


def test_a_sync_stream_carries_the_guarded_reply_and_its_report(llama_server: str) -> None:
    guarded = wrap_openai(openai.OpenAI(base_url=llama_server, api_key="none"), **SMALL)
    plain = guarded.chat.completions.create(**REPLY)
    stream = guarded.chat.completions.create(
        **REPLY, stream=True, stream_options={"include_usage": True}
    )
    assert isinstance(stream, openai.Stream)
    with stream:
        chunks = list(stream)
    report = check_stream(chunks, usage=True)
    assert report.decision == "answer"
    assert "Tokyo" in text_of(chunks)
    assert text_of(chunks) == plain.choices[0].message.content == report.reply
    # one Guard served both calls
    assert len(guarded._uq_guard.guards) == 1


async def test_an_async_stream_carries_the_guarded_reply_and_its_report(
    llama_server: str,
) -> None:
    guarded = wrap_openai(openai.AsyncOpenAI(base_url=llama_server, api_key="none"), **SMALL)
    plain = await guarded.chat.completions.create(**REPLY)
    stream = await guarded.chat.completions.create(**REPLY, stream=True)
    assert isinstance(stream, openai.AsyncStream)
    async with stream:
        chunks = [chunk async for chunk in stream]
    report = check_stream(chunks, usage=False)
    assert text_of(chunks) == plain.choices[0].message.content == report.reply
    assert "Tokyo" in text_of(chunks)


def test_abstain_streams_the_refusal_not_the_withdrawn_reply(llama_server: str) -> None:
    guarded = wrap_openai(
        openai.OpenAI(base_url=llama_server, api_key="none"), **SMALL, **SURE_TO_ABSTAIN
    )
    plain = guarded.chat.completions.create(**REPLY)
    chunks = list(guarded.chat.completions.create(**REPLY, stream=True))
    report = check_stream(chunks, usage=False)
    assert report.decision == "abstain" and report.confidence < 1.0
    refusal = GuardConfig().abstain_message
    assert text_of(chunks) == plain.choices[0].message.content == refusal
    withdrawn = report.original_reply
    assert withdrawn and "Tokyo" in withdrawn
    assert not any("Tokyo" in (c.choices[0].delta.content or "") for c in chunks if c.choices)
