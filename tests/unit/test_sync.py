"""``run_sync`` and the sync ``Guard.run``: usable with or without a running event loop."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import Guard
from uq_guard._sync import run_sync
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("from the coroutine")


def test_run_sync_without_a_loop() -> None:
    assert run_sync(double(21)) == 42


def test_run_sync_can_be_called_repeatedly() -> None:
    assert [run_sync(double(i)) for i in range(3)] == [0, 2, 4]


async def test_run_sync_inside_a_running_loop() -> None:
    assert run_sync(double(4)) == 8
    # the caller's loop is still usable afterwards
    assert await double(1) == 2


def test_run_sync_passes_exceptions_through() -> None:
    with pytest.raises(KeyError, match="from the coroutine"):
        run_sync(fail())


async def test_run_sync_passes_exceptions_through_inside_a_loop() -> None:
    with pytest.raises(KeyError, match="from the coroutine"):
        run_sync(fail())


async def test_run_sync_inside_a_loop_sees_the_callers_context() -> None:
    async def read() -> str:
        return REQUEST_ID.get()

    token = REQUEST_ID.set("req-42")
    try:
        assert run_sync(read()) == "req-42"
    finally:
        REQUEST_ID.reset(token)


def test_guard_run_without_a_loop(embedder) -> None:
    guard = Guard(
        FakeBackend("Paris is the capital of France."),
        embedder=embedder,
        n_perturbations=0,
        n_samples=3,
        retry_wait_s=0.0,
    )

    result = guard.run("What is the capital of France?")

    assert result.text == "Paris is the capital of France."


async def test_guard_run_inside_a_running_loop(embedder) -> None:
    backend = FakeBackend(
        "Paris is the capital of France.", paraphrases=["Which city is the capital of France?"]
    )
    guard = Guard(
        backend,
        embedder=embedder,
        n_perturbations=1,
        n_samples=3,
        retry_wait_s=0.0,
        perturbation="paraphrase",  # the paraphrase is scripted
    )

    result = guard.run("What is the capital of France?")

    assert result.text == "Paris is the capital of France."
    assert result.report.n_prompts == 2
    assert result.report.cost.model_calls == backend.calls == 4


async def test_guard_run_inside_a_loop_gives_the_same_report_as_arun(embedder) -> None:
    def make() -> Guard:
        return Guard(
            FakeBackend(
                "Paris is the capital of France.",
                paraphrases=["Which city is the capital of France?"],
            ),
            embedder=embedder,
            n_perturbations=1,
            n_samples=3,
            retry_wait_s=0.0,
        )

    synced = make().run("What is the capital of France?")
    awaited = await make().arun("What is the capital of France?")

    assert synced.report.scores == awaited.report.scores
    assert synced.report.confidence == awaited.report.confidence
