"""A LangChain chain with a guarded model in the middle: prompt | guarded model | parser.

The guarded model drops into any chain where a chat model goes. The parser
still gets the text it expects; the uncertainty report rides on the
``AIMessage`` in between, and this example reads it from there (a chain that
stops at the model) and shows batching several questions at once.

Run: ``.venv/bin/python examples/langchain_chain.py`` (after ``make setup``).
Swap ``HuggingFaceChatModel.default()`` for any LangChain chat model
(``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``...) and nothing else changes.
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from uq_guard_hf import HuggingFaceChatModel

import uq_guard

prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a geography tutor. Answer in one short sentence."),
        ("user", "{question}"),
    ]
)


def main() -> None:
    model = HuggingFaceChatModel.default(max_new_tokens=40, seed=0)
    # uq_guard.guard recognises a LangChain chat model and wraps it.
    guarded = uq_guard.guard(model, n_perturbations=4, n_samples=3, max_tokens=32)

    # 1. The whole chain: the parser gets plain text, as before.
    answer_chain = prompt | guarded | StrOutputParser()
    print("answer:", answer_chain.invoke({"question": "What is the capital of France?"}))

    # 2. Stop at the model to read the report next to the reply.
    report_chain = prompt | guarded
    questions = ["What is the capital of Italy?", "What is the capital of Burkina Faso?"]
    for question, message in zip(
        questions, report_chain.batch([{"question": q} for q in questions]), strict=True
    ):
        report = message.response_metadata["uq_guard"]
        confidence = report["confidence"]  # None when no sample came back
        shown = "n/a" if confidence is None else f"{confidence:.2f}"
        print(
            f"\n{question}\n  reply: {message.content}\n"
            f"  confidence {shown} via {report['method']}; "
            f"{report['n_prompts']} prompts, {report['n_samples']} answers scored; "
            f"tokens spent in all: {message.usage_metadata['total_tokens']}"
        )


if __name__ == "__main__":
    main()
