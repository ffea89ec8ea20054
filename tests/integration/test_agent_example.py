"""examples/agent_abstain.py: its LangGraph graph, run on the real local model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from uq_guard_hf import HuggingFaceChatModel
from uq_guard_hf.chat_model import shipped_guard_defaults
from uq_guard_langchain import GuardedChatModel

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "agent_abstain.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_abstain", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered first: LangGraph resolves the state's annotations through sys.modules
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_graph_routes_each_answer_on_its_reports_confidence(
    smollm2: HuggingFaceChatModel,
) -> None:
    example = _load_example()
    # the example's own model: greedy replies, the shipped calibration and budget, seeded samples
    local = smollm2.model_copy(update={"max_tokens": 32, "seed": 0})
    agent = example.build_agent(GuardedChatModel(model=local))

    taken = {}
    for question in example.QUESTIONS:
        state = agent.invoke({"question": question})
        report = state["report"]
        assert report["calibrated"], report["degraded_reasons"]
        assert report["threshold"] == pytest.approx(shipped_guard_defaults()["threshold"])
        assert state["draft"] == report["reply"]  # the guard only annotated
        shaky = report["confidence"] is None or report["confidence"] < report["threshold"]
        # the graph took the "cannot answer" branch exactly when the report says shaky
        assert state.get("handed_on", False) == shaky, (question, report["confidence"])
        assert state["answer"] == (example.CANNOT_ANSWER if shaky else state["draft"])
        taken[question] = (shaky, report["confidence"])

    # The example's questions sit far on either side of the shipped threshold (about 0.9
    # and 0.01 against 0.15), so the run shows both branches; if a new calibration moves
    # them, pick questions that do.
    assert {shaky for shaky, _ in taken.values()} == {True, False}, taken
