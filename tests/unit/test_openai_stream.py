"""``wrap_openai``: guarded streaming, one Guard per wrapper, and its shared cap.

The real ``openai`` SDK talks to an in-process fake server (the SDK's HTTP
library's ``MockTransport``: no socket, no model), so these tests see what a
user's code sees: ``create(..., stream=True)`` returns an ``openai.Stream``
of ``ChatCompletionChunk`` that replays the guarded result, report last.
The real MiniLM embedder scores the samples.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import uq_guard_openai.completion as completion_module
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from uq_guard_openai import completion_chunks, wrap_openai
from uq_guard_openai.stream import _http_module

import uq_guard.engine
from tests.support.upstream import completion
from tests.unit.fake_backend import ANSWER, QUESTION, UNRELATED
from uq_guard import Guard, GuardConfig, UncertaintyAbstention, UncertaintyReport

HTTP = _http_module(openai.OpenAI(api_key="unused"))  # httpx, or the fork this SDK runs on
MESSAGES = [{"role": "user", "content": QUESTION}]
SMALL = {"n_perturbations": 0, "perturbation": "none", "n_samples": 3, "max_tokens": 24}
ABSTAIN = GuardConfig().abstain_message


def is_reply(body: dict[str, Any]) -> bool:
    """The guard asks log-probabilities with the reply only."""
    return body.get("logprobs") is True


class FakeServer:
    """An OpenAI-compatible chat endpoint in process; like llama.cpp it ignores ``n``.

    Args:
        reply: the reply's text.
        sample: a sample's text from its index (0, 1, ...).
        delay_s: how long each request takes.
        reply_status: the reply's HTTP status (500: the reply fails).

    Attributes:
        bodies: every request body, in order of arrival.
        most_in_flight: the most requests it was answering at once.
    """

    def __init__(
        self,
        reply: str = ANSWER,
        sample: Callable[[int], str] = lambda i: ANSWER,
        *,
        delay_s: float = 0.0,
        reply_status: int = 200,
    ) -> None:
        self.reply, self.sample = reply, sample
        self.delay_s, self.reply_status = delay_s, reply_status
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def _enter(self, request: Any) -> dict[str, Any]:
        body = json.loads(request.content)
        with self._lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return body

    def _answer(self, body: dict[str, Any]) -> Any:
        with self._lock:
            self.in_flight -= 1
            index = len(self.sample_bodies()) - 1
        if not is_reply(body):
            return HTTP.Response(200, json=completion([self.sample(index)]))
        if self.reply_status != 200:
            return HTTP.Response(self.reply_status, json={"error": {"message": "boom"}})
        return HTTP.Response(200, json=completion([self.reply], logprobs=True))

    def handle(self, request: Any) -> Any:
        body = self._enter(request)
        time.sleep(self.delay_s)
        return self._answer(body)

    async def ahandle(self, request: Any) -> Any:
        body = self._enter(request)
        await asyncio.sleep(self.delay_s)
        return self._answer(body)

    def sample_bodies(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if not is_reply(b)]

    def client(self, **config: Any) -> openai.OpenAI:
        raw = openai.OpenAI(
            api_key="test",
            base_url="http://fake.test/v1",
            max_retries=0,
            http_client=HTTP.Client(transport=HTTP.MockTransport(self.handle)),
        )
        return wrap_openai(raw, **{**SMALL, **config})

    def async_client(self, **config: Any) -> openai.AsyncOpenAI:
        raw = openai.AsyncOpenAI(
            api_key="test",
            base_url="http://fake.test/v1",
            max_retries=0,
            http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(self.ahandle)),
        )
        return wrap_openai(raw, **{**SMALL, **config})


def erratic(index: int) -> str:
    """Samples that have nothing in common: a low confidence."""
    return UNRELATED[1 + index % (len(UNRELATED) - 1)]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- the stream a user gets --------------------------------------------------------


def test_a_sync_stream_replays_the_guarded_reply_then_the_report() -> None:
    server = FakeServer()
    client = server.client()
    plain = client.chat.completions.create(model="m", messages=MESSAGES)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)

    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 3  # the text comes in pieces, not in one chunk
    assert text_of(chunks) == plain.choices[0].message.content == ANSWER
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert isinstance(final.uncertainty, UncertaintyReport)
    assert final.model_extra["uncertainty"] is final.uncertainty is stream.uncertainty
    assert final.uncertainty.decision == "answer" and final.uncertainty.n_samples == 3
    assert all("uncertainty" not in (c.model_extra or {}) for c in chunks[:-1])
    # the guarded calls themselves were never streamed
    assert all("stream" not in b and "stream_options" not in b for b in server.bodies)


def test_abstain_streams_the_refusal_never_the_withdrawn_reply() -> None:
    server = FakeServer(sample=erratic)
    stream = server.client(policy="abstain", threshold=0.9).chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    )
    chunks = list(stream)
    report = chunks[-1].uncertainty
    assert report.decision == "abstain" and report.original_reply == ANSWER
    assert text_of(chunks) == report.reply == ABSTAIN
    assert not any("Paris" in (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_include_usage_ends_with_a_usage_chunk_summing_every_call() -> None:
    server = FakeServer()
    chunks = list(
        server.client().chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    usage_chunk, final = chunks[-1], chunks[-2]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert final.uncertainty.cost.model_calls == len(server.bodies) == 4
    assert usage_chunk.usage.total_tokens == final.uncertainty.cost.total_tokens == 4 * 15
    assert all(c.usage is None for c in chunks[:-1])


def test_policy_raise_raises_from_create_before_any_chunk() -> None:
    server = FakeServer(sample=erratic)
    client = server.client(policy="raise", threshold=0.9)
    with pytest.raises(UncertaintyAbstention) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert isinstance(caught.value.reply, ChatCompletion)
    assert caught.value.reply.choices[0].message.content == ANSWER


def test_a_failed_reply_raises_the_sdk_error_from_create() -> None:
    server = FakeServer(reply_status=500)
    with pytest.raises(openai.InternalServerError):
        server.client().chat.completions.create(model="m", messages=MESSAGES, stream=True)


def test_close_and_the_context_manager_end_the_stream() -> None:
    client = FakeServer().client()
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        first = next(stream)
    assert first.choices[0].delta.role == "assistant"
    assert list(stream) == [] and stream.response.is_closed
    again = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    again.close()
    assert list(again) == []


def test_the_sdks_stream_helper_gets_the_guarded_stream() -> None:
    server = FakeServer()
    client = server.client()
    with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER
    chunks = [e.chunk for e in events if e.type == "chunk"]
    assert chunks[-1].uncertainty.decision == "answer"
    # the helper's unset arguments (omit) do not reach the guard's own requests
    assert [b["max_tokens"] for b in server.sample_bodies()] == [24, 24, 24]
    assert all("max_completion_tokens" not in b for b in server.bodies)


async def test_an_async_stream_replays_the_guarded_reply_then_the_report() -> None:
    server = FakeServer(sample=erratic)
    client = server.async_client(policy="abstain", threshold=0.9)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.AsyncStream)
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert text_of(chunks) == ABSTAIN
    assert chunks[-1].uncertainty is stream.uncertainty
    assert stream.uncertainty.decision == "abstain" and stream.response.is_closed
    closed = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    await closed.close()
    assert [chunk async for chunk in closed] == []


# -- the chunks themselves ---------------------------------------------------------


def chat_completion(message: dict[str, Any], finish_reason: str = "stop") -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
        }
    )


def test_the_chunks_join_back_to_the_text_whitespace_and_all() -> None:
    text = "  Two  spaces,\na newline\tand a tab "
    chunks = completion_chunks(chat_completion({"role": "assistant", "content": text}))
    assert text_of(chunks) == text
    assert "uncertainty" not in (chunks[-1].model_extra or {})  # no report, none invented


def test_tool_calls_stream_whole_in_one_chunk() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chunks = completion_chunks(
        chat_completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    )
    calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(calls) == 1
    (delta_call,) = calls[0].choices[0].delta.tool_calls
    assert (delta_call.index, delta_call.id, delta_call.function.name) == (0, "call_1", "f")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# -- one Guard per wrapper ------------------------------------------------------------


def test_the_guard_is_built_once_per_wrapper_and_config(monkeypatch) -> None:
    built: list[GuardConfig] = []
    calibrations: list[Any] = []

    class CountedGuard(Guard):
        def __init__(self, backend: Any, config: Any = None, **kwargs: Any) -> None:
            built.append(config)
            super().__init__(backend, config, **kwargs)

    resolve = uq_guard.engine.resolve_calibration

    def counted_resolve(calibration: Any) -> Any:
        calibrations.append(calibration)
        return resolve(calibration)

    monkeypatch.setattr(completion_module, "Guard", CountedGuard)
    monkeypatch.setattr(uq_guard.engine, "resolve_calibration", counted_resolve)
    server = FakeServer(sample=erratic)
    client = server.client(policy="abstain", threshold=0.9)
    for _ in range(2):
        client.chat.completions.create(model="m", messages=MESSAGES)
    list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    client.with_options(timeout=30).chat.completions.create(model="m", messages=MESSAGES)
    assert len(built) == 1 and len(calibrations) == 1

    # a per-call setting gets a Guard of its own, once, and does not leak into other calls
    # (threshold 0: never acts, whichever erratic answer lands on which request)
    lenient = {"extra_body": {"uq_guard": {"threshold": 0.0}}}
    for _ in range(2):
        resp = client.chat.completions.create(model="m", messages=MESSAGES, **lenient)
        assert resp.uncertainty.decision == "answer"
    resp = client.chat.completions.create(model="m", messages=MESSAGES)
    assert resp.uncertainty.decision == "abstain"
    assert [c.threshold for c in built] == [0.9, 0.0]
    assert len(server.bodies) == 7 * 4


def test_the_cap_holds_across_calls_from_many_threads() -> None:
    server = FakeServer(delay_s=0.03)
    client = server.client(max_concurrency=2, n_samples=4)

    def ask(_: int) -> ChatCompletion:
        return client.chat.completions.create(model="m", messages=MESSAGES)

    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(ask, range(4)))
    assert all(r.uncertainty.n_samples == 4 for r in replies)
    # one cap for the wrapper: a Guard per call would have let 4 x 2 requests run at once
    assert server.most_in_flight == 2


def test_the_async_cap_holds_across_calls_and_event_loops() -> None:
    server = FakeServer(delay_s=0.03)
    client = server.async_client(max_concurrency=2, n_samples=4)

    async def ask_three() -> list[Any]:
        return await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(3))
        )

    first = asyncio.run(ask_three())
    second = asyncio.run(ask_three())  # a new loop: the shared cap must not be bound to the old
    assert [r.uncertainty.n_samples for r in first + second] == [4] * 6
    assert server.most_in_flight == 2


def test_the_wrappers_cap_is_the_engines_limit_of_every_guard_it_builds(monkeypatch) -> None:
    built: list[Guard] = []

    class RecordedGuard(Guard):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(completion_module, "Guard", RecordedGuard)
    client = FakeServer().client(max_concurrency=2, policy="fallback", fallback="m-2")
    client.chat.completions.create(model="m", messages=MESSAGES)
    # (threshold 0: never acts, whichever erratic answer lands on which request)
    lenient = {"extra_body": {"uq_guard": {"threshold": 0.0}}}
    client.chat.completions.create(model="m", messages=MESSAGES, **lenient)
    assert len(built) == 2
    # one object caps the HTTP calls (model and fallback alike) and the engine's model requests
    (limit,) = {id(guard.model_limit) for guard in built}
    assert all(id(guard.backend.slots) == id(guard.fallback.slots) == limit for guard in built)
    assert built[0].model_limit.limit == 2
