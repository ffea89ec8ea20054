"""LangChain integration: ``GuardedChatModel`` wraps any chat model."""

from uq_guard import UncertaintyAbstention
from uq_guard_langchain.backend import LangChainBackend
from uq_guard_langchain.chat_model import METADATA_KEY, GuardedChatModel

__all__ = ["METADATA_KEY", "GuardedChatModel", "LangChainBackend", "UncertaintyAbstention"]
