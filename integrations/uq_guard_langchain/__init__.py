"""LangChain integration: ``GuardedChatModel`` wraps any chat model."""

# Submodules, not the ``uq_guard`` root: the root's ``guard()`` imports this package.
from uq_guard._exceptions import UncertaintyAbstention
from uq_guard_langchain.backend import LangChainBackend
from uq_guard_langchain.chat_model import METADATA_KEY, REPORT_RUN_NAME, GuardedChatModel

__all__ = [
    "METADATA_KEY",
    "REPORT_RUN_NAME",
    "GuardedChatModel",
    "LangChainBackend",
    "UncertaintyAbstention",
]
