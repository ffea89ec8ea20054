"""A scripted LangChain chat model for unit tests of the LangChain adapter."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field, PrivateAttr

Responder = Callable[[str, float, random.Random], "str | AIMessage"]


def steady(answer: str) -> Responder:
    """Always the same answer."""
    return lambda prompt, temperature, rng: answer


def erratic(answers: Sequence[str]) -> Responder:
    """A random pick among unrelated answers whenever sampling (temperature > 0)."""
    return lambda prompt, temperature, rng: (
        answers[0] if temperature == 0 else rng.choice(list(answers))
    )


class ScriptedChatModel(BaseChatModel):
    """Answers with ``respond(last_user_text, temperature, rng)``; counts its calls.

    Paraphrase requests (the engine asks for "Rewrite the following question")
    get ``paraphrases`` one per line.
    """

    respond: Any
    temperature: float = 0.0
    paraphrases: list[str] = Field(default_factory=list)
    fail_when: Any = None  # callable(prompt, temperature) -> Exception | None
    seed: int = 0
    _log: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _rng: random.Random = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._rng = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._log

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False):
        copy = super().model_copy(update=update, deep=deep)
        copy._log = self._log  # copies made for sampling share the call log
        copy._rng = self._rng
        return copy

    def _generate(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> ChatResult:
        prompt = messages[-1].text
        self._log.append(
            {"prompt": prompt, "temperature": self.temperature, "kwargs": kwargs, "stop": stop}
        )
        if self.fail_when is not None:
            error = self.fail_when(prompt, self.temperature)
            if error is not None:
                raise error
        if prompt.startswith("Rewrite the following question"):
            answer: str | AIMessage = "\n".join(self.paraphrases)
        else:
            answer = self.respond(prompt, self.temperature, self._rng)
        message = answer if isinstance(answer, AIMessage) else AIMessage(content=answer)
        message = message.model_copy(
            update={
                "usage_metadata": {
                    "input_tokens": len(prompt.split()),
                    "output_tokens": len(message.text.split()),
                    "total_tokens": len(prompt.split()) + len(message.text.split()),
                }
            }
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        return self.bind(tools=[getattr(t, "__name__", str(t)) for t in tools], **kwargs)
