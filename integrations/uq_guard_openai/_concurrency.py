"""``ConcurrencyLimit``: an async semaphore that holds across event loops and threads.

A wrapped client's ``Guard`` lives as long as the wrapper, and so does its
cap on HTTP calls in flight. ``asyncio.Semaphore`` cannot be that cap: it
binds to the first event loop that waits on it, and every sync call runs on
a loop of its own (``asyncio.run``, or a fresh loop in a worker thread inside
Jupyter). This one keeps its count under a thread lock and wakes each waiter
on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from types import TracebackType


class ConcurrencyLimit:
    """At most ``limit`` holders at once, whichever thread or event loop they run on.

    Waiters are served first come, first served. Use it as ``async with limit:``.

    Args:
        limit: the number of slots (at least 1).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._free = self.limit
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        """Slots held right now (handed over to a waiter counts as held)."""
        with self._lock:
            return self.limit - self._free

    async def acquire(self) -> None:
        """Wait for a slot and take it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except BaseException:
            with self._lock:
                try:
                    self._waiters.remove((loop, waiter))
                except ValueError:
                    # A slot was already handed over to this waiter.
                    if waiter.done() and not waiter.cancelled():
                        self._release_locked()  # it arrived: give it back
                    elif not waiter.done():
                        waiter.cancel()  # _hand_over will see that and pass it on
            raise

    def release(self) -> None:
        """Give a slot back (to the longest waiter, if any)."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        while self._waiters:
            loop, waiter = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(self._hand_over, waiter)
            except RuntimeError:  # that waiter's loop is closed: nobody is waiting there
                continue
            return
        self._free += 1

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        # Runs on the waiter's own loop.
        if waiter.cancelled():
            self.release()
        else:
            waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
