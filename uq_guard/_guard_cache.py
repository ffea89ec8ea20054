"""``GuardCache``: a wrapper's Guards, one per effective config, built once and reused.

A wrapper whose calls may bring their own settings (the proxy's per-request
``uq_guard`` settings, ``extra_body={"uq_guard": {...}}`` on a wrapped
client) keeps a few Guards, one per distinct effective
:class:`~uq_guard.config.GuardConfig`: requests with the same settings share
one Guard, so its calibration file is read once and its concurrency cap holds
across them. The cache is small and least-recently-used: settings that vary
from call to call cost a rebuild, never unbounded memory. Guards that differ
in other settings may still share one cap on model requests
(:meth:`GuardCache.model_limit`, passed to each as ``Guard(model_limit=...)``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from uq_guard._limits import ConcurrencyLimit
from uq_guard.config import GuardConfig
from uq_guard.engine import Guard

__all__ = ["GuardCache", "config_key"]


def config_key(config: GuardConfig) -> tuple[tuple[str, Hashable], ...]:
    """A hashable key equal for two configs with equal settings.

    Values without a value equality (a ``Calibrator`` object, a similarity
    function) count by identity; the Guard cached under the key keeps them
    alive, so an identity is never reused while the key is in use.
    """
    return tuple((name, _frozen(getattr(config, name))) for name in GuardConfig.model_fields)


def _frozen(value: Any) -> Hashable:
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_frozen(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


class GuardCache:
    """The Guards of one wrapper, keyed by what tells them apart, least recently used first out.

    Args:
        max_size: how many Guards are kept (at least 1).

    Example:
        >>> guards = GuardCache(max_size=8)
        >>> guard = guards.get(config_key(config), lambda: Guard(backend, config))
    """

    def __init__(self, max_size: int = 8) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        self._guards: OrderedDict[Hashable, Guard] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # how many Guards were built (a rebuild after eviction counts)
        self._limits: dict[int, ConcurrencyLimit] = {}

    def get(self, key: Hashable, build: Callable[[], Guard]) -> Guard:
        """The Guard under ``key``, built with ``build()`` the first time.

        Building happens under the cache's lock, so concurrent first calls
        build one Guard, not several.
        """
        with self._lock:
            guard = self._guards.get(key)
            if guard is None:
                guard = build()
                self.builds += 1
                self._guards[key] = guard
                while len(self._guards) > self.max_size:
                    self._guards.popitem(last=False)
            else:
                self._guards.move_to_end(key)
            return guard

    def model_limit(self, size: int) -> ConcurrencyLimit:
        """The cap of ``size`` model requests in flight shared by this cache's Guards.

        One per size, kept for the cache's life (an evicted Guard's rebuild
        gets the same one), so a wrapper's Guards with equal
        ``max_concurrency`` count against one cap. May be called from
        ``build()``, under the cache's lock.
        """
        limit = self._limits.get(size)
        if limit is None:
            limit = self._limits.setdefault(size, ConcurrencyLimit(size))
        return limit

    def __len__(self) -> int:
        return len(self._guards)
