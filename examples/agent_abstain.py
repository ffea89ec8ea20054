"""An agent graph that hands a shaky answer to a human instead of sending it.

User story: you run a support agent built with LangGraph. When the model is
sure of its answer, the answer goes straight to the user; when it is not, the
graph takes a "cannot answer" branch that hands the question on (here to a
human; a search tool or a bigger model fits the same place) and tells the user
so, instead of sending a confident-sounding guess.

The answer node is a ``GuardedChatModel`` around the local model.
``HuggingFaceChatModel.default()`` carries its shipped calibration and
sampling budget, so ``confidence`` is a fitted P(correct) and ``threshold``
the shipped one. The guard only annotates; the graph's router reads the
report in ``AIMessage.response_metadata["uq_guard"]`` and picks the branch::

    START -> answer --(confidence >= threshold)-------> END
                    \\-(below it, or no estimate)--> cannot_answer -> END

Run: ``.venv/bin/python examples/agent_abstain.py`` (after ``make setup``).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from uq_guard_hf import HuggingFaceChatModel
from uq_guard_langchain import GuardedChatModel

QUESTIONS = ["What is the capital of France?", "Who won the 1987 Tour de Suisse?"]
# the system message the shipped calibration was fitted with
SYSTEM = SystemMessage("Answer in a few words.")
CANNOT_ANSWER = "I can't answer that reliably, so I have passed it on to a colleague."


class AgentState(TypedDict, total=False):
    question: str
    answer: str  # what the user gets
    draft: str  # the model's own answer, kept for the logs
    report: dict[str, Any]  # the uq_guard report of the draft
    handed_on: bool  # True when the "cannot answer" node took the question


def route(state: AgentState) -> Literal["confident", "shaky"]:
    """Send the draft to the user only when the guard vouches for it."""
    report = state["report"]
    confidence = report["confidence"]  # None when no sample came back: nothing vouches for it
    if confidence is None or confidence < report["threshold"]:
        return "shaky"
    return "confident"


def build_agent(chat: BaseChatModel) -> CompiledStateGraph:
    """The compiled graph; ``chat`` is a guarded model (its replies carry a uq_guard report)."""

    def answer(state: AgentState) -> AgentState:
        reply = chat.invoke([SYSTEM, HumanMessage(state["question"])])
        report = reply.response_metadata["uq_guard"]
        return {"answer": reply.content, "draft": reply.content, "report": report}

    def cannot_answer(state: AgentState) -> AgentState:
        # the hand-off goes here: a ticket for a human, a search tool, a bigger model
        return {"answer": CANNOT_ANSWER, "handed_on": True}

    graph = StateGraph(AgentState)
    graph.add_node("answer", answer)
    graph.add_node("cannot_answer", cannot_answer)
    graph.add_edge(START, "answer")
    graph.add_conditional_edges("answer", route, {"confident": END, "shaky": "cannot_answer"})
    graph.add_edge("cannot_answer", END)
    return graph.compile()


def main() -> None:
    local = HuggingFaceChatModel.default(max_new_tokens=32, seed=0)
    agent = build_agent(GuardedChatModel(model=local))  # policy="annotate": the graph decides
    for question in QUESTIONS:
        state = agent.invoke({"question": question})
        report = state["report"]
        confidence = "n/a" if report["confidence"] is None else f"{report['confidence']:.2f}"
        print(f"\nuser>  {question}\nagent> {state['answer']}")
        print(f"       (confidence {confidence}, threshold {report['threshold']:.2f})")
        if state.get("handed_on"):
            print(f"       handed on; the model's draft, for the logs: {state['draft']!r}")


if __name__ == "__main__":
    main()
