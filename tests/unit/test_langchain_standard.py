"""LangChain's standard chat-model unit suite, run against GuardedChatModel."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests
from uq_guard_langchain import GuardedChatModel

from tests.unit.lc_fakes import ScriptedChatModel, steady


class TestGuardedChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[GuardedChatModel]:
        return GuardedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": ScriptedChatModel(respond=steady("Paris.")),
            "n_perturbations": 2,
            "n_samples": 2,
        }

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # Two standard parameters do not apply to a wrapper: temperature=0 would
        # mean greedy *samples*, which carry no uncertainty (GuardConfig rejects
        # it on purpose), and the API key belongs to the wrapped model.
        params = {**super().standard_chat_model_params, "temperature": 0.7}
        params.pop("api_key")
        return params

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
