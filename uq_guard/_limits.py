"""Process-wide concurrency caps: :class:`ConcurrencyLimit` and the ambient model limit.

A :class:`~uq_guard.engine.Guard` owns one ``ConcurrencyLimit`` for its
model requests (``GuardConfig.max_concurrency``) and is built once per
wrapper, so the cap holds across every call of that wrapper, not per call.
The engine hands its limit to the one place all its model calls pass through
(:class:`~uq_guard._retry.RetryingBackend`), which makes it the *ambient*
limit (a context variable) while a round runs; :func:`~uq_guard.backend.fan_out`,
which sends one request per answer for backends that cannot batch, holds a
slot of the ambient limit for each request in flight. A backend with its own
transport (one HTTP call per request, say) can do the same with
:func:`current_model_limit`.

A guarded call may run on an event loop of its own: the sync twins run each
call with ``asyncio.run`` (in a worker thread inside a running loop), and
LangChain's ``batch`` runs sync calls on a thread pool. ``asyncio.Semaphore``
belongs to one loop, so the limit here is thread-safe and hands slots across
loops.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

__all__ = ["ConcurrencyLimit", "current_model_limit", "model_limit"]


class ConcurrencyLimit:
    """At most ``limit`` holders at once, across threads and event loops.

    An async semaphore that any event loop in the process may wait on: a
    released slot goes to the longest waiter first (on the waiter's own loop),
    and a waiter cancelled while it waits takes no slot.

    Args:
        limit: how many holders at once (at least 1).

    Example:
        >>> limit = ConcurrencyLimit(4)
        >>> async with limit:
        ...     ...  # at most 4 of these blocks run at once, process-wide
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        """How many slots are held now."""
        return self._in_use

    async def acquire(self) -> None:
        """Wait for a slot and take it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._in_use += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            entry = (loop, future)
            self._waiters.append(entry)
        try:
            await future
        except BaseException:  # cancelled (or interrupted) while waiting
            with self._lock:
                try:
                    self._waiters.remove(entry)
                    handed_over = False
                except ValueError:
                    handed_over = True
            # A slot handed over as the wait ended is passed on: here when it already
            # arrived, else by ``_grant``, which finds the future cancelled.
            if handed_over:
                if future.done() and not future.cancelled():
                    self.release()
                elif not future.done():
                    future.cancel()
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter, or to the pool."""
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._grant, future)
                except RuntimeError:  # the waiter's loop is closed: nobody to hand it to
                    continue
                return  # the slot changes hands: in_use stays
            self._in_use -= 1

    def _grant(self, future: asyncio.Future[None]) -> None:
        """Hand a slot to a waiter (runs on the waiter's loop)."""
        if future.cancelled():  # it gave up after it was chosen: the next one gets the slot
            self.release()
        else:
            future.set_result(None)

    async def __aenter__(self) -> ConcurrencyLimit:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyLimit(limit={self.limit}, in_use={self._in_use})"


_model_limit: contextvars.ContextVar[ConcurrencyLimit | None] = contextvars.ContextVar(
    "uq_guard_model_limit", default=None
)


def current_model_limit() -> ConcurrencyLimit | None:
    """The model-request limit of the guard whose round is running here, if any."""
    return _model_limit.get()


@contextmanager
def model_limit(limit: ConcurrencyLimit | None) -> Iterator[None]:
    """Make ``limit`` the ambient model limit inside the block (``None`` leaves it as it is).

    Tasks started inside the block (``asyncio.gather``) inherit it.
    """
    if limit is None:
        yield
        return
    token = _model_limit.set(limit)
    try:
        yield
    finally:
        _model_limit.reset(token)
