"""A ``GuardedChatModel``'s Guards: built once from its parts, kept, and shared with its copies.

The wrapper's :class:`~uq_guard.Guard` (perturber, calibration, embedder, the
cap on model requests) is built on its first call and reused by every later
one. A copy with other parts (``bind_tools`` gives one with another inner
model) gets a Guard of its own from the same small cache, under the same
cap on model requests, so ``max_concurrency`` holds across the copies.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable

from uq_guard._guard_cache import GuardCache, config_key
from uq_guard.backend import Backend, is_backend
from uq_guard.config import GuardConfig
from uq_guard.engine import Guard
from uq_guard_langchain.backend import LangChainBackend

__all__ = ["SharedGuards"]


class SharedGuards(GuardCache):
    """A ``GuardedChatModel``'s Guards, shared with its shallow copies.

    Its Guards share one cap on model requests per ``max_concurrency``
    (:meth:`~uq_guard._guard_cache.GuardCache.model_limit`), so a copy
    (``bind_tools``) and the original count against one cap. A deep copy or
    a pickle starts empty: a Guard holds locks and caches that belong to
    this process.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedGuards:
        return SharedGuards(self.max_size)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedGuards, (self.max_size,))

    def guard_for(
        self,
        model: Runnable,
        config: GuardConfig,
        *,
        fallback: Runnable | None = None,
        embedder: Any = None,
        perturber: Any = None,
    ) -> Guard:
        """The Guard for these parts and settings, built the first time they are asked for."""
        key = (id(model), id(fallback), id(embedder), id(perturber), config_key(config))
        # The Guard holds the model, fallback, embedder and perturber (and so their ids)
        # for as long as it is cached: an id in the key is never reused meanwhile.
        return self.get(
            key,
            lambda: Guard(
                _backend(model, config),
                config,
                embedder=embedder,
                perturber=perturber,
                fallback=None if fallback is None else _backend(fallback, config),
                model_limit=self.model_limit(config.max_concurrency),
            ),
        )


def _backend(model: Runnable, config: GuardConfig) -> Backend:
    """The model itself when it is a uq_guard Backend, else a :class:`LangChainBackend` over it."""
    if is_backend(model):
        return model
    return LangChainBackend(
        model, max_concurrency=config.max_concurrency, timeout_s=config.timeout_s
    )
