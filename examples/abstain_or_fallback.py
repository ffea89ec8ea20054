"""Three ways to act on a low-confidence reply: abstain, fall back, or raise and route.

The same shaky question goes through three guards around the local model:

1. ``policy="abstain"``: the user gets a refusal; the model's answer is kept
   in the report for your logs.
2. ``policy="fallback"``: the question goes to a second model and its reply
   is returned, with both reports.
3. ``policy="raise"``: ``UncertaintyAbstention`` is raised, so LangChain's own
   ``with_fallbacks`` can route the question (here to the same second model).

The "second model" here is SmolLM2 again (so the example runs offline, and
its answer may be no better); in production it is the bigger model you pay
more for, e.g. ``ChatOpenAI(model="gpt-4o")``.

Run: ``.venv/bin/python examples/abstain_or_fallback.py`` (after ``make setup``).
"""

from __future__ import annotations

from uq_guard_hf import HuggingFaceChatModel
from uq_guard_langchain import GuardedChatModel

from uq_guard import UncertaintyAbstention

QUESTION = "What is 7 times 8?"
# threshold=1.0 makes every policy act, so all three paths show; in real use
# pick it from an evaluation run (see the README's "Evaluating" section).
BUDGET = {"n_perturbations": 4, "n_samples": 3, "max_tokens": 32, "threshold": 1.0}


def describe(label: str, reply: object) -> None:
    report = reply.response_metadata["uq_guard"]
    print(f"\n[{label}] {reply.content}")
    print(f"  confidence {shown(report['confidence'])}, decision: {report['decision']}")
    if report["original_reply"] is not None:
        print(f"  the local model had said: {report['original_reply']!r}")
    if report["fallback"] is not None:
        print(f"  fallback's own confidence: {shown(report['fallback']['confidence'])}")


def shown(confidence: float | None) -> str:
    """The confidence for printing; None means no sample came back (no estimate)."""
    return "n/a" if confidence is None else f"{confidence:.2f}"


def main() -> None:
    local = HuggingFaceChatModel.default(max_new_tokens=40, seed=0)
    # Stands in for a bigger model: any LangChain chat model goes here.
    second_model = local.model_copy(update={"max_tokens": 24})

    abstaining = GuardedChatModel(model=local, policy="abstain", **BUDGET)
    describe("abstain", abstaining.invoke(QUESTION))

    falling_back = GuardedChatModel(model=local, policy="fallback", fallback=second_model, **BUDGET)
    describe("fallback", falling_back.invoke(QUESTION))

    raising = GuardedChatModel(model=local, policy="raise", **BUDGET)
    routed = raising.with_fallbacks([second_model], exceptions_to_handle=(UncertaintyAbstention,))
    reply = routed.invoke(QUESTION)
    print(f"\n[raise + with_fallbacks] {reply.content}  (answered by the second model)")

    try:
        raising.invoke(QUESTION)
    except UncertaintyAbstention as abstention:
        print(
            f"\n[raise] caught UncertaintyAbstention: confidence "
            f"{abstention.report.confidence:.2f}, the reply was {abstention.reply.content!r}"
        )


if __name__ == "__main__":
    main()
