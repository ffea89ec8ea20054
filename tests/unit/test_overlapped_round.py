"""A backend that answers requests independently gets the reply while GAAP still runs (issue 14).

The perturber here blocks until the test releases it, so "the reply went out
before the perturbed prompts existed" is certain, not a matter of timing. A
batching backend (no ``independent_requests``) must still get one round.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.fake_backend import QUESTION, FakeBackend, kind_of, prompt_of
from tests.unit.model_free_parts import HashingEmbedder
from uq_guard import Guard
from uq_guard.backend import answers_independently
from uq_guard.perturb import PerturbationResult

VARIANTS = ["Which city is France's capital?", "Name the capital of France."]


class HeldPerturber:
    """Makes fixed variants once ``release`` is set; records what the backend had seen."""

    def __init__(self, backend: FakeBackend, *, fail: bool = False) -> None:
        self.backend = backend
        self.release = asyncio.Event()
        self.seen_at_start: list[str] = []
        self.fail = fail

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        await self.release.wait()
        self.seen_at_start = [kind_of(r) for r in self.backend.requests]
        if self.fail:
            raise RuntimeError("perturber broke")
        return PerturbationResult(prompts=VARIANTS[:m], method="held", n_requested=m)


class IndependentBackend(FakeBackend):
    independent_requests = True


def guard_for(backend: FakeBackend, perturber: HeldPerturber) -> Guard:
    return Guard(
        backend,
        embedder=HashingEmbedder(),
        perturber=perturber,
        n_perturbations=2,
        n_samples=3,
        retry_wait_s=0.0,
    )


async def run_releasing_later(guard: Guard, perturber: HeldPerturber, backend: FakeBackend):
    call = asyncio.ensure_future(guard.arun(QUESTION))
    for _ in range(50):  # let every request that does not need the variants go out
        await asyncio.sleep(0)
    sent_before_release = [kind_of(r) for r in backend.requests]
    perturber.release.set()
    return await call, sent_before_release


async def test_the_reply_and_the_prompts_samples_go_out_while_the_variants_are_made() -> None:
    backend = IndependentBackend()
    perturber = HeldPerturber(backend)

    result, sent_early = await run_releasing_later(
        guard_for(backend, perturber), perturber, backend
    )

    assert sent_early == ["reply", "sample"]
    assert [prompt_of(r) for r in backend.rounds[0]] == [QUESTION, QUESTION]
    assert [prompt_of(r) for r in backend.rounds[1]] == VARIANTS
    report = result.report
    assert report.n_prompts == 3 and report.n_samples == 9
    assert report.perturbations == VARIANTS
    assert report.timings_ms["perturb"] > 0


async def test_a_batching_backend_still_gets_one_round_after_the_variants() -> None:
    backend = FakeBackend()
    perturber = HeldPerturber(backend)

    result, sent_early = await run_releasing_later(
        guard_for(backend, perturber), perturber, backend
    )

    assert sent_early == []
    assert len(backend.rounds) == 1
    assert [prompt_of(r) for r in backend.rounds[0]] == [QUESTION, QUESTION, *VARIANTS]
    assert result.report.n_samples == 9


async def test_a_failed_perturbation_keeps_the_early_reply_and_samples() -> None:
    backend = IndependentBackend()
    perturber = HeldPerturber(backend, fail=True)

    result, _ = await run_releasing_later(guard_for(backend, perturber), perturber, backend)

    assert result.text == "Paris is the capital of France."
    assert result.report.n_prompts == 1 and result.report.n_samples == 3
    assert any("perturbation failed" in reason for reason in result.report.degraded_reasons)
    assert len(backend.rounds) == 1  # nothing to sample for the variants


async def test_a_cancelled_call_cancels_its_early_requests() -> None:
    backend = IndependentBackend()
    backend.delay_s = 5.0
    perturber = HeldPerturber(backend)
    call = asyncio.ensure_future(guard_for(backend, perturber).arun(QUESTION))
    for _ in range(50):
        await asyncio.sleep(0)
    assert [kind_of(r) for r in backend.requests] == ["reply", "sample"]

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not pending, pending


def test_which_backends_answer_independently() -> None:
    from uq_guard_langchain.backend import LangChainBackend
    from uq_guard_openai.backend import CallScopedBackend, OpenAIBackend

    assert all(map(answers_independently, (OpenAIBackend, CallScopedBackend, LangChainBackend)))
    assert not answers_independently(FakeBackend())
