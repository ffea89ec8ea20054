"""The report in LangChain traces: a ``uq_guard`` child run with the report as metadata and tags.

Checked with LangChain's own tracer (``RunCollectorCallbackHandler``, a
``BaseTracer`` like the LangSmith one) and with a plain callback handler, so
what a trace UI receives is what the test reads.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.tracers.schemas import Run
from uq_guard_langchain import REPORT_RUN_NAME, GuardedChatModel

from tests.unit.lc_fakes import ScriptedChatModel, erratic, steady
from uq_guard import UncertaintyAbstention
from uq_guard.embeddings import shared_embedder

QUESTION = "What is the capital of France?"
UNRELATED = [
    "Bananas are rich in potassium.",
    "The stock market fell sharply today.",
    "Quantum entanglement links particles.",
    "My cat sleeps all afternoon.",
]
SMALL = {"perturbation": "none", "n_perturbations": 0, "n_samples": 3}


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def guarded(responder: Any, embedder: Any, **settings: Any) -> GuardedChatModel:
    return GuardedChatModel(
        model=ScriptedChatModel(respond=responder), embedder=embedder, **{**SMALL, **settings}
    )


def report_run(root: Run) -> Run:
    [run] = [child for child in root.child_runs if child.name == REPORT_RUN_NAME]
    return run


class ChainStarts(BaseCallbackHandler):
    """Records what ``on_chain_start`` hands a callback handler."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.chat_model_runs: list[UUID] = []

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        if parent_run_id is None:
            self.chat_model_runs.append(run_id)

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs):
        self.starts.append({"parent": parent_run_id, **kwargs})


def test_the_report_run_carries_the_report_in_metadata_and_tags(embedder):
    tracer = RunCollectorCallbackHandler()
    chat = guarded(steady("Paris."), embedder)
    message = chat.invoke(
        QUESTION,
        config={"callbacks": [tracer], "tags": ["my-app"], "metadata": {"user": "u1"}},
    )
    report = message.response_metadata["uq_guard"]  # still on the message too
    [root] = tracer.traced_runs
    assert root.run_type == "llm" and root.name == "GuardedChatModel"
    run = report_run(root)
    assert run.run_type == "chain" and run.parent_run_id == root.id
    metadata = run.extra["metadata"]
    assert metadata["uq_guard"] == report
    assert metadata["uq_guard_decision"] == "answer"
    assert metadata["uq_guard_confidence"] == report["confidence"] > 0.5
    assert metadata["uq_guard_method"] == report["method"]
    assert metadata["uq_guard_degraded"] is False
    assert metadata["user"] == "u1"  # the caller's own metadata is inherited, not replaced
    assert "uq_guard:decision:answer" in run.tags and "my-app" in run.tags
    assert run.outputs == {"uq_guard": report}
    # the inner model's runs stay apart: one reply and three samples
    assert sum(child.run_type == "llm" for child in root.child_runs) == 4


def test_async_calls_trace_the_decision_a_plain_handler_sees(embedder):
    handler = ChainStarts()
    chat = guarded(erratic(UNRELATED), embedder, policy="abstain", threshold=0.9)
    message = asyncio.run(chat.ainvoke(QUESTION, config={"callbacks": [handler]}))
    assert message.response_metadata["uq_guard"]["decision"] == "abstain"
    [start] = [s for s in handler.starts if s.get("name") == REPORT_RUN_NAME]
    assert start["parent"] == handler.chat_model_runs[0]
    assert start["metadata"]["uq_guard_decision"] == "abstain"
    assert start["metadata"]["uq_guard"]["original_reply"] == UNRELATED[0]
    assert "uq_guard:decision:abstain" in start["tags"]


def test_a_raised_abstention_is_traced_before_it_propagates(embedder):
    tracer = RunCollectorCallbackHandler()
    chat = guarded(erratic(UNRELATED), embedder, policy="raise", threshold=0.9)
    with pytest.raises(UncertaintyAbstention) as caught:
        chat.invoke(QUESTION, config={"callbacks": [tracer]})
    [root] = tracer.traced_runs
    assert root.error is not None
    metadata = report_run(root).extra["metadata"]
    assert metadata["uq_guard_decision"] == "abstain"
    assert metadata["uq_guard"] == caught.value.report.model_dump()
