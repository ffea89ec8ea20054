"""The demo: a chatbot on a local model that says how sure it is, and abstains when it is not.

A short scripted conversation with SmolLM2-135M-Instruct (a 135M-parameter
model that runs on any CPU), guarded by uq_guard with ``policy="abstain"``.
Each reply is printed with its confidence and the decision; on a question the
model answers erratically the guard returns a refusal instead, and the
model's own answer stays in the report: the demo prints it, and what the
model said when asked the same question again. Run in a terminal, the chat then
goes on with your own questions (an empty line quits).

Run: ``make demo`` (sets everything up first) or
``.venv/bin/python examples/chatbot.py [--no-interactive]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from uq_guard_hf import HuggingFaceChatModel
from uq_guard_langchain import GuardedChatModel

SCRIPT = [
    "What is the capital of Japan?",
    "What is 7 times 8?",
    "Who wrote the novel Moby-Dick?",
    "What is the capital of Australia?",
]
# The system message the shipped calibration was fitted with (see README, "Benchmarks").
SYSTEM = SystemMessage("Answer in a few words.")


def build_chatbot() -> GuardedChatModel:
    """SmolLM2 (greedy replies) wrapped in an abstaining guard.

    ``HuggingFaceChatModel.default()`` carries the calibration fitted for it
    and the sampling budget it was fitted with (``guard_defaults``), so the
    confidence printed is a fitted P(correct) and the threshold means that.
    """
    local = HuggingFaceChatModel.default(seed=0)
    # include_samples: an abstention can show what the model said the other times
    return GuardedChatModel(model=local, policy="abstain", include_samples=True)


def other_answers(report: dict, shown: int = 3, width: int = 60) -> list[str]:
    """Up to ``shown`` sampled answers that differ from the reply, shortened.

    One from each prompt in turn (the question as asked first, then its
    rewordings), so that they show how the model's answer varies.
    """
    reply = (report["original_reply"] or "").strip()
    per_prompt = [
        [s.strip() for s in answers if s.strip() and s.strip() != reply]
        for answers in report["samples"] or []
    ]
    differing: dict[str, None] = {}
    for rank in range(max(map(len, per_prompt), default=0)):
        for answers in per_prompt:
            if rank < len(answers):
                differing.setdefault(answers[rank])
    return [s if len(s) <= width else s[: width - 1] + "…" for s in list(differing)[:shown]]


def ask(
    chat: GuardedChatModel, history: list[BaseMessage], question: str, echo: bool = True
) -> None:
    """Answer one turn, print it with its confidence, and keep it in the history."""
    # The guard perturbs only the last user message; the last exchange is
    # kept as context, as a chatbot would.
    messages = [SYSTEM, *history[-2:], HumanMessage(question)]
    started = time.perf_counter()
    reply = chat.invoke(messages)
    seconds = time.perf_counter() - started
    report = reply.response_metadata["uq_guard"]

    if echo:
        print(f"\nyou> {question}")
    print(f"bot> {reply.content}")
    confidence = report["confidence"]  # None when no sample came back
    shown = "n/a" if confidence is None else f"{confidence:.2f}"
    source = "calibrated P(correct)" if report["calibrated"] else report["method"]
    print(
        f"     confidence {shown} ({source}), "
        f"decision: {report['decision']}, {report['cost']['model_calls']} model calls, "
        f"{seconds:.1f} s"
    )
    if report["decision"] == "abstain":
        print(f"     (the model had said: {report['original_reply']!r})")
        others = other_answers(report)
        if others:
            print(f"     (other times it said: {' | '.join(map(repr, others))})")
    history.extend([HumanMessage(question), AIMessage(str(reply.content))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-interactive", action="store_true", help="stop after the scripted conversation"
    )
    args = parser.parse_args()

    print("Loading SmolLM2-135M-Instruct and the embedding model...")
    chat = build_chatbot()
    settings = chat.guard_config
    scale = "P(correct), calibrated" if settings.calibration is not None else "label-free"
    print(
        f"Guard: abstain when confidence ({scale}) < {settings.threshold}, "
        f"{settings.n_perturbations} perturbed prompts × {settings.n_samples} samples per reply."
    )
    history: list[BaseMessage] = []
    for question in SCRIPT:
        ask(chat, history, question)

    if args.no_interactive or not sys.stdin.isatty():
        return 0
    print("\nYour turn (an empty line quits).")
    while True:
        try:
            question = input("\nyou> ").strip()
        except EOFError:
            return 0
        if not question:
            return 0
        ask(chat, history, question, echo=False)


if __name__ == "__main__":
    sys.exit(main())
