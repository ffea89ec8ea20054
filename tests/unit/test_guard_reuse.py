"""One Guard per wrapper: caps that hold across calls, a calibration file read once.

``GuardedChatModel`` and the proxy's upstreams build their Guard once and
reuse it, so the calibration file is read once per wrapper, not per call,
and ``GuardedChatModel``'s ``max_concurrency`` caps the model requests in
flight across *all* its concurrent calls (sync calls on threads of their own
included); the proxy caps each request's calls on its own.
The built-in embedder is shared process-wide and encodes one batch at a time.
The inner chat model is a LangChain ``BaseChatModel`` that counts the
requests it is serving at once; the embedder is the real MiniLM.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr
from uq_guard_langchain import GuardedChatModel
from uq_guard_server.upstream import LocalUpstream, OpenAIUpstream

import uq_guard.calibration
from tests.support.upstream import MODEL, ScriptedUpstream
from tests.unit.fake_backend import FakeBackend
from uq_guard.calibration import Calibrator, PlattMapping
from uq_guard.config import GuardConfig
from uq_guard.embeddings import shared_embedder

QUESTION = "What is the capital of France?"
# samples only: every call is one batched round of 1 reply + 3 samples
SMALL = {"perturbation": "none", "n_perturbations": 0, "n_samples": 3, "n_bootstrap": 0}


class CountingChatModel(BaseChatModel):
    """Answers after a short sleep and records how many requests it serves at once.

    Counted under a thread lock: sync calls run on threads, each with an
    event loop of its own.
    """

    answer: str = "Paris is the capital of France."
    delay_s: float = 0.01
    numbered: bool = False  # "<answer> #<call>": every answer a new text for the embedder
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _stats: dict[str, int] = PrivateAttr(default_factory=lambda: {"now": 0, "max": 0, "calls": 0})

    @property
    def _llm_type(self) -> str:
        return "counting"

    @property
    def max_in_flight(self) -> int:
        return self._stats["max"]

    @property
    def calls(self) -> int:
        return self._stats["calls"]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False):
        copy = super().model_copy(update=update, deep=deep)
        copy._lock, copy._stats = self._lock, self._stats  # sampling copies count here too
        return copy

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs):
        raise NotImplementedError("the guard calls models with ainvoke")

    async def _agenerate(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> ChatResult:
        with self._lock:
            self._stats["now"] += 1
            self._stats["calls"] += 1
            self._stats["max"] = max(self._stats["max"], self._stats["now"])
            text = f"{self.answer} #{self._stats['calls']}" if self.numbered else self.answer
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            with self._lock:
                self._stats["now"] -= 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def test_max_concurrency_caps_model_requests_across_concurrent_async_calls(embedder):
    inner = CountingChatModel()
    chat = GuardedChatModel(model=inner, embedder=embedder, max_concurrency=4, **SMALL)

    async def twenty_calls() -> list[Any]:
        return await asyncio.gather(*(chat.ainvoke(QUESTION) for _ in range(20)))

    messages = asyncio.run(twenty_calls())
    assert all(m.response_metadata["uq_guard"]["decision"] == "answer" for m in messages)
    assert inner.calls == 20 * 4
    # one cap for the wrapper: per call, 20 calls could have had 20 x 4 requests in flight
    assert inner.max_in_flight == 4


def test_the_cap_holds_for_sync_calls_on_threads_with_loops_of_their_own(embedder):
    inner = CountingChatModel()
    chat = GuardedChatModel(model=inner, embedder=embedder, max_concurrency=4, **SMALL)
    # batch runs each sync invoke on a thread pool; each runs its own event loop
    messages = chat.batch([QUESTION] * 20, config={"max_concurrency": 20})
    assert len(messages) == 20 and inner.calls == 20 * 4
    assert inner.max_in_flight == 4


def test_the_builtin_embedder_runs_one_batch_at_a_time_across_concurrent_calls(
    embedder, monkeypatch: pytest.MonkeyPatch
):
    model = embedder.model  # the loaded sentence-transformers model behind the shared embedder
    encode = model.encode
    stats = {"now": 0, "max": 0, "calls": 0}
    lock = threading.Lock()

    def counting_encode(*args: Any, **kwargs: Any) -> Any:
        with lock:
            stats["now"] += 1
            stats["calls"] += 1
            stats["max"] = max(stats["max"], stats["now"])
        try:
            time.sleep(0.005)  # long enough for concurrent encodes to overlap
            return encode(*args, **kwargs)
        finally:
            with lock:
                stats["now"] -= 1

    monkeypatch.setattr(model, "encode", counting_encode)
    inner = CountingChatModel(numbered=True)
    chat = GuardedChatModel(model=inner, embedder=embedder, **SMALL)

    async def twenty_calls() -> list[Any]:
        return await asyncio.gather(*(chat.ainvoke(QUESTION) for _ in range(20)))

    asyncio.run(twenty_calls())
    # every call had new answers to embed; calls that came while the model was busy shared a pass
    assert stats["calls"] >= 2
    assert stats["max"] == 1  # the embedder's process-wide lock: one forward pass at a time


def test_one_guard_serves_every_call_and_a_copy_with_another_model_gets_its_own(embedder):
    chat = GuardedChatModel(model=CountingChatModel(), embedder=embedder, **SMALL)
    first = chat.guard
    chat.invoke(QUESTION)
    asyncio.run(chat.ainvoke(QUESTION))
    assert chat.guard is first
    other = chat.model_copy(update={"model": CountingChatModel(answer="Lyon.")})
    assert other.guard is not first
    assert other.guard.model_limit is first.model_limit  # a copy counts against the same cap
    assert other.invoke(QUESTION).content == "Lyon."
    assert chat.guard is first  # the copy did not take the original's Guard away


@pytest.fixture
def calibration_file(tmp_path: pathlib.Path) -> pathlib.Path:
    return Calibrator(mapping=PlattMapping(slope=2.0, intercept=-1.0)).save(
        tmp_path / "calibration.json"
    )


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch, calibration_file: pathlib.Path) -> dict[str, int]:
    """Counts the reads of the calibration file, and the Guard's loads of it."""
    counts = {"reads": 0, "loads": 0}
    read_text = pathlib.Path.read_text
    load = uq_guard.calibration.load_calibration

    def counting_read(self: pathlib.Path, *args: Any, **kwargs: Any) -> str:
        if self.resolve() == calibration_file.resolve():
            counts["reads"] += 1
        return read_text(self, *args, **kwargs)

    def counting_load(path: Any) -> Calibrator:
        counts["loads"] += 1
        return load(path)

    monkeypatch.setattr(pathlib.Path, "read_text", counting_read)
    # the loader the Guard calls (resolve_calibration looks it up in its module)
    monkeypatch.setattr(uq_guard.calibration, "load_calibration", counting_load)
    return counts


def test_the_calibration_file_is_read_once_per_wrapper(embedder, calibration_file, file_reads):
    chat = GuardedChatModel(
        model=CountingChatModel(), embedder=embedder, calibration=str(calibration_file), **SMALL
    )
    at_construction = file_reads["reads"]  # GuardConfig checks the file when it is built
    reports = [chat.invoke(QUESTION).response_metadata["uq_guard"] for _ in range(3)]
    reports += [asyncio.run(chat.ainvoke(QUESTION)).response_metadata["uq_guard"]]
    reports += [m.response_metadata["uq_guard"] for m in chat.batch([QUESTION] * 3)]
    assert all(r["calibrated"] for r in reports)
    assert file_reads["loads"] == 1
    assert file_reads["reads"] == at_construction + 1  # seven calls, one read

    second = GuardedChatModel(
        model=CountingChatModel(), embedder=embedder, calibration=str(calibration_file), **SMALL
    )
    second.invoke(QUESTION)
    second.invoke(QUESTION)
    assert file_reads["loads"] == 2  # once per wrapper


def local_body(**settings: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "local", "messages": [{"role": "user", "content": QUESTION}]}
    return body | ({"max_tokens": settings["max_tokens"]} if "max_tokens" in settings else {})


def test_the_local_upstream_keeps_one_guard_per_effective_config(
    embedder, calibration_file, file_reads
):
    upstream = LocalUpstream(FakeBackend(), "local")
    base = GuardConfig(calibration=str(calibration_file), **SMALL)
    other = GuardConfig.build(base, threshold=0.9)  # a request's own allowed setting

    async def requests() -> list[Any]:
        return [
            await upstream.complete(local_body(), base),
            await upstream.complete(local_body(), GuardConfig.build(base, threshold=0.5)),
            await upstream.complete(local_body(), other),
            await upstream.complete(local_body(), GuardConfig.build(base, threshold=0.9)),
            await upstream.complete(local_body(), base),
        ]

    completions = asyncio.run(requests())
    assert [c.uncertainty.threshold for c in completions] == [0.5, 0.5, 0.9, 0.9, 0.5]
    assert all(c.uncertainty.calibrated for c in completions)
    # equal settings share a Guard, whichever config object carries them
    assert file_reads["loads"] == 2
    assert upstream.guards.builds == 2


def test_the_proxy_upstream_caps_each_requests_calls_and_shares_one_guard(embedder):
    config = GuardConfig(max_concurrency=2, retry_wait_s=0.05, **SMALL)
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
    with ScriptedUpstream(honour_n=False, delay_s=0.02) as server:
        upstream = OpenAIUpstream(server.base_url, models=[MODEL])

        async def twelve_requests() -> list[Any]:
            try:
                return await asyncio.gather(
                    *(upstream.complete(dict(body), config) for _ in range(12))
                )
            finally:
                await upstream.aclose()

        completions = asyncio.run(twelve_requests())
        assert all(c.uncertainty.decision == "answer" for c in completions)
        assert len(server.bodies) == 12 * 4  # the upstream ignores n: one call per sample
        # 2 a request, not 2 for all twelve (one request alone: test_server_safety)
        assert 2 < server.max_in_flight <= 12 * 2
    assert upstream.guards.builds == 1
