"""OpenTelemetry spans of a guarded call, read back through the SDK's in-memory exporter.

Each test gives its own ``TracerProvider`` to the ``Guard``
(``Guard(..., tracer_provider=...)``), so nothing here sets OpenTelemetry's
process-wide provider, which can be set only once per process. What a user
sees with the global provider (nothing configured, or an SDK configured after
the guard was built, through the LangChain adapter) runs in a fresh
interpreter. A scripted backend and a hashing embedder keep every call fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.unit.fake_backend import ANSWER, PARAPHRASES, QUESTION, FakeBackend, erratic
from tests.unit.model_free_parts import HashingEmbedder
from uq_guard import Guard, GuardResult, UncertaintyAbstention
from uq_guard._exceptions import GenerationError
from uq_guard.tracing import (
    CALL_SPAN,
    DECIDE_SPAN,
    EMBED_SPAN,
    GENERATE_SPAN,
    PERTURB_SPAN,
    SCORE_SPAN,
    GuardTracing,
)

REPO = Path(__file__).resolve().parents[2]


class BadRequest(Exception):
    status_code = 400


class Traces:
    """A tracer provider of its own, whose finished spans land in an in-memory exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def only(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        [parent] = [s for s in self.spans if s.context.span_id == span.parent.span_id]
        return parent


@pytest.fixture
def traces() -> Iterator[Traces]:
    traces = Traces()
    yield traces
    traces.provider.shutdown()


def make_guard(backend: FakeBackend, traces: Traces, **config) -> Guard:
    settings = {
        "n_perturbations": 3,
        "n_samples": 4,
        "perturbation": "paraphrase",
        "retry_wait_s": 0.0,
        **config,
    }
    return Guard(
        backend,
        embedder=HashingEmbedder(),
        tracer_provider=traces.provider,
        **settings,
    )


# -- the span tree and its attributes -----------------------------------------


async def test_one_call_span_with_a_child_span_for_each_step(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    result = await make_guard(backend, traces).arun(QUESTION)

    call = traces.only(CALL_SPAN)
    assert call.parent is None
    for step in (PERTURB_SPAN, GENERATE_SPAN, SCORE_SPAN, DECIDE_SPAN):
        assert traces.parent_of(traces.only(step)) is call, step
    # scoring embeds: the embed span sits inside the score span, across the worker thread
    assert traces.parent_of(traces.only(EMBED_SPAN)) is traces.only(SCORE_SPAN)
    assert {s.context.trace_id for s in traces.spans} == {call.context.trace_id}
    assert result.report.decision == "answer"


async def test_the_call_span_carries_the_reports_headline_numbers(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    report = (await make_guard(backend, traces).arun(QUESTION)).report

    attributes = traces.only(CALL_SPAN).attributes
    assert attributes["uq_guard.confidence"] == pytest.approx(report.confidence)
    assert attributes["uq_guard.decision"] == report.decision == "answer"
    assert attributes["uq_guard.method"] == report.method
    assert attributes["uq_guard.calibrated"] is report.calibrated
    assert attributes["uq_guard.n_prompts"] == report.n_prompts == 4
    assert attributes["uq_guard.n_samples"] == report.n_samples == 16
    assert attributes["uq_guard.model_calls"] == report.cost.model_calls == backend.calls
    assert attributes["uq_guard.total_tokens"] == report.cost.total_tokens > 0
    assert attributes["uq_guard.degraded"] is False
    assert "uq_guard.degraded_reasons" not in attributes


async def test_step_spans_count_requests_samples_and_embedded_texts(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    await make_guard(backend, traces, n_perturbations=3, n_samples=4).arun(QUESTION)

    generate = traces.only(GENERATE_SPAN).attributes
    assert generate["uq_guard.generate.requests"] == 1 + 4 == len(backend.rounds[-1])
    assert generate["uq_guard.generate.samples"] == 1 + 4 * 4  # the reply and 4 per prompt
    assert generate["uq_guard.generate.failed"] == 0
    perturb = traces.only(PERTURB_SPAN).attributes
    assert perturb["uq_guard.perturbation.real"] == 3
    assert perturb["uq_guard.n_prompts"] == 4
    # distinct texts: 4 prompts and one answer (the reply is that answer too)
    assert traces.only(EMBED_SPAN).attributes["uq_guard.embed.texts"] == 5
    decide = traces.only(DECIDE_SPAN).attributes
    assert decide["uq_guard.policy"] == "annotate"
    assert decide["uq_guard.decision"] == "answer"


async def test_each_adaptive_round_is_a_generate_span(traces) -> None:
    backend = FakeBackend(erratic, paraphrases=PARAPHRASES)

    report = (
        await make_guard(
            backend, traces, adaptive=True, adaptive_first_samples=2, n_samples=5
        ).arun(QUESTION)
    ).report

    assert report.sampling_rounds == 2
    first, second = traces.named(GENERATE_SPAN)
    assert first.attributes["uq_guard.generate.samples"] == 1 + 4 * 2
    assert second.attributes["uq_guard.generate.samples"] == 4 * 3
    assert len(traces.named(SCORE_SPAN)) == 2  # round 1 scored, then everything


async def test_lost_samples_show_on_the_generate_and_call_spans(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail(PARAPHRASES[0], BadRequest("400 bad request"), times=None)

    report = (await make_guard(backend, traces).arun(QUESTION)).report

    assert report.degraded
    assert traces.only(GENERATE_SPAN).attributes["uq_guard.generate.failed"] == 1
    call = traces.only(CALL_SPAN).attributes
    assert call["uq_guard.degraded"] is True
    assert call["uq_guard.n_failed"] == report.n_failed == 4
    assert list(call["uq_guard.degraded_reasons"]) == report.degraded_reasons


async def test_an_abstention_is_the_decision_on_the_call_span(traces) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)

    result = await make_guard(backend, traces, policy="abstain", threshold=0.99).arun(QUESTION)

    assert result.report.decision == "abstain"
    assert traces.only(CALL_SPAN).attributes["uq_guard.decision"] == "abstain"
    assert traces.only(DECIDE_SPAN).attributes["uq_guard.decision"] == "abstain"


async def test_the_fallback_models_rounds_nest_under_decide(traces) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)
    fallback = FakeBackend("Paris.", paraphrases=PARAPHRASES)
    guard = Guard(
        backend,
        embedder=HashingEmbedder(),
        fallback=fallback,
        tracer_provider=traces.provider,
        policy="fallback",
        threshold=0.99,
        n_perturbations=3,
        n_samples=4,
        perturbation="paraphrase",
    )

    result = await guard.arun(QUESTION)

    assert result.report.decision == "fallback"
    decide = traces.only(DECIDE_SPAN)
    guarded, fallback_round = traces.named(GENERATE_SPAN)
    assert traces.parent_of(guarded) is traces.only(CALL_SPAN)
    assert traces.parent_of(fallback_round) is decide
    assert decide.attributes["uq_guard.decision"] == "fallback"


# -- errors -----------------------------------------------------------------


async def test_a_failed_reply_is_an_error_on_the_call_span(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)
    backend.fail("reply", BadRequest("400 bad request"), times=None)

    with pytest.raises(GenerationError):
        await make_guard(backend, traces).arun(QUESTION)

    call = traces.only(CALL_SPAN)
    assert call.status.status_code is StatusCode.ERROR
    assert [event.name for event in call.events] == ["exception"]
    assert call.events[0].attributes["exception.type"].endswith("GenerationError")


async def test_policy_raise_ends_the_call_span_in_error_with_its_attributes(traces) -> None:
    backend = FakeBackend(erratic, reply=ANSWER, paraphrases=PARAPHRASES)

    with pytest.raises(UncertaintyAbstention) as raised:
        await make_guard(backend, traces, policy="raise", threshold=0.99).arun(QUESTION)

    call = traces.only(CALL_SPAN)
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes["uq_guard.decision"] == "abstain"
    assert call.attributes["uq_guard.confidence"] == pytest.approx(raised.value.report.confidence)


# -- context ------------------------------------------------------------------


async def test_the_call_span_is_a_child_of_the_callers_span(traces) -> None:
    tracer = traces.provider.get_tracer("the-application")
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    with tracer.start_as_current_span("handle-request") as outer:
        await make_guard(backend, traces).arun(QUESTION)

    call = traces.only(CALL_SPAN)
    assert call.parent is not None and call.parent.span_id == outer.get_span_context().span_id


def test_the_sync_twin_makes_the_same_spans(traces) -> None:
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    make_guard(backend, traces).run(QUESTION)

    names = sorted(span.name for span in traces.spans)
    assert names == sorted(
        [CALL_SPAN, PERTURB_SPAN, GENERATE_SPAN, SCORE_SPAN, EMBED_SPAN, DECIDE_SPAN]
    )


# -- without opentelemetry ------------------------------------------------------


async def test_without_opentelemetry_installed_the_guard_runs_unchanged(
    traces, monkeypatch
) -> None:
    traced = await make_guard(FakeBackend(ANSWER, paraphrases=PARAPHRASES), traces).arun(QUESTION)
    traces.exporter.clear()
    # None in sys.modules makes "from opentelemetry import trace" raise ImportError
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    backend = FakeBackend(ANSWER, paraphrases=PARAPHRASES)

    guard = make_guard(backend, traces)
    result: GuardResult = await guard.arun(QUESTION)

    assert not GuardTracing().enabled
    assert guard._tracing.backend(backend) is backend  # nothing wrapped, nothing to pay
    assert traces.spans == ()
    assert result.text == traced.text
    assert result.report.confidence == pytest.approx(traced.report.confidence)


_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.unit.fake_backend import ANSWER, PARAPHRASES, QUESTION, FakeBackend
    from tests.unit.lc_fakes import ScriptedChatModel, steady
    from tests.unit.test_tracing import HashingEmbedder
    import uq_guard
    from uq_guard import Guard

    recording = []

    class Spying(FakeBackend):
        async def generate(self, requests):
            recording.append(trace.get_current_span().is_recording())
            return await super().generate(requests)

    settings = dict(n_perturbations=2, n_samples=3, perturbation="paraphrase")
    # 1. nothing configured: the guard works and its spans record nothing
    guard = Guard(Spying(ANSWER, paraphrases=PARAPHRASES), embedder=HashingEmbedder(), **settings)
    before = guard.run(QUESTION)
    recording_before = recording.copy()
    recording.clear()

    # 2. the application configures an SDK afterwards, as applications do
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    after = guard.run(QUESTION)
    same_guard = sorted({s.name for s in exporter.get_finished_spans()})
    exporter.clear()

    # 3. the one-line entry on a LangChain chat model, traced through the global provider
    chat = uq_guard.guard(
        ScriptedChatModel(respond=steady(ANSWER), paraphrases=PARAPHRASES),
        embedder=HashingEmbedder(),
        **settings,
    )
    message = chat.invoke(QUESTION)
    spans = exporter.get_finished_spans()
    calls = [dict(s.attributes) for s in spans if s.name == "uq_guard.guard"]
    print(json.dumps({
        "recording_before": recording_before,
        "recording_after": recording,
        "text_before": before.text,
        "confidence_before": before.report.confidence,
        "text_after": after.text,
        "same_guard": same_guard,
        "langchain_text": message.content,
        "langchain_report": message.response_metadata["uq_guard"],
        "langchain_calls": calls,
    }))
    """
)


def test_with_the_global_provider_unset_then_set_spans_follow_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # no SDK: non-recording spans, and the call is answered as ever
    assert seen["recording_before"] and not any(seen["recording_before"])
    assert seen["recording_after"] and all(seen["recording_after"])
    assert seen["text_before"] == seen["text_after"] == ANSWER
    assert seen["confidence_before"] is not None
    # an SDK set later reaches a guard built before it (OpenTelemetry's proxy tracer)
    assert seen["same_guard"] == sorted(
        [CALL_SPAN, DECIDE_SPAN, EMBED_SPAN, GENERATE_SPAN, PERTURB_SPAN, SCORE_SPAN]
    )
    # a GuardedChatModel's call is traced, with its report's numbers on the call span
    [call] = seen["langchain_calls"]
    report = seen["langchain_report"]
    assert seen["langchain_text"] == ANSWER
    assert call["uq_guard.decision"] == report["decision"]
    assert call["uq_guard.confidence"] == pytest.approx(report["confidence"])
    assert call["uq_guard.model_calls"] == report["cost"]["model_calls"] > 0
