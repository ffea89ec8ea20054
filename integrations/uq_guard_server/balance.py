"""Even load over ``--workers``: a worker above its share closes a connection after answering.

The kernel places each new connection on a worker by a hash of its
addresses (:mod:`uq_guard_server.workers`), and a kept-alive connection stays
where it was placed. With few clients the split is uneven: 20 clients over 2
workers, measured in ``benchmarks/proxy_load.py``, held 14 connections on one
worker and 6 on the other, so the first worker's requests took more than
twice as long and set the p95 latency.

Every worker counts its HTTP requests in flight in a table the workers share
(:class:`WorkerLoads`, made by the parent before any worker starts; each
worker claims a :class:`WorkerSlot` of it). When a worker answers while it
holds more than its share of the requests in flight, more than
``ceil(total / workers)``, :class:`RebalancingMiddleware` adds
``Connection: close`` to the response: the client opens a new connection for
its next request and the kernel places that one afresh. Once the split is
even, a connection is closed only when the requests in flight swing (0–6
of about 210 answers in the 30 timed seconds of ``benchmarks/proxy_load.py``);
one worker alone never closes one.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["RebalancingMiddleware", "WorkerLoads", "WorkerSlot"]

CLOSE_HEADER = (b"connection", b"close")

# a table row per slot: (pid, requests in flight); pid 0 is a free slot
_PID, _IN_FLIGHT, _ROW = 0, 1, 2


class WorkerSlot:
    """One worker's row of a :class:`WorkerLoads` table; only that worker writes it."""

    def __init__(self, table: Any, index: int) -> None:
        self._table = table
        self._values = table.get_obj()  # without the lock: one writer per row
        self._row = index * _ROW

    @property
    def in_flight(self) -> int:
        return int(self._values[self._row + _IN_FLIGHT])

    def started(self) -> None:
        self._values[self._row + _IN_FLIGHT] += 1

    def finished(self) -> None:
        self._values[self._row + _IN_FLIGHT] -= 1

    def over_share(self) -> bool:
        """Whether this worker holds more than ``ceil(total / workers)`` requests in flight."""
        values = self._values
        rows = range(0, len(values), _ROW)
        workers = sum(1 for row in rows if values[row + _PID])
        total = sum(values[row + _IN_FLIGHT] for row in rows if values[row + _PID])
        mine = self.in_flight
        return workers > 1 and mine * workers > total + workers - 1

    def release(self) -> None:
        """Give the row back (the worker is stopping)."""
        with self._table.get_lock():
            self._values[self._row + _PID] = 0
            self._values[self._row + _IN_FLIGHT] = 0


class WorkerLoads:
    """Requests in flight per worker, in memory the parent shares with the workers it spawns.

    Args:
        slots: rows in the table; a restarted worker takes the row of one
            that stopped, so twice the workers leaves room for restarts.

    An instance travels to a worker only while the worker is being spawned
    (``multiprocessing``'s rule for shared memory), as :class:`WorkerListener`
    does it (:mod:`uq_guard_server.workers`).
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a WorkerLoads table needs at least one slot, got {slots}")
        self.table = multiprocessing.get_context("spawn").Array("q", _ROW * slots)

    def claim(self, pid: int | None = None) -> WorkerSlot | None:
        """A free row for ``pid`` (default: this process), else one whose process is gone.

        None when every row is held by a running process. A row claimed for
        this process is given back when it exits.
        """
        pid = os.getpid() if pid is None else pid
        values = self.table.get_obj()
        with self.table.get_lock():
            rows = range(0, len(values), _ROW)
            free = [row for row in rows if not values[row + _PID]]
            gone = [row for row in rows if values[row + _PID] and not _alive(values[row + _PID])]
            if not free and not gone:
                logger.warning("worker %d: no free row in the load table; not rebalancing", pid)
                return None
            row = (free or gone)[0]
            values[row + _PID] = pid
            values[row + _IN_FLIGHT] = 0
        slot = WorkerSlot(self.table, row // _ROW)
        if pid == os.getpid():
            atexit.register(slot.release)
        return slot


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but not ours
        return True
    return True


class RebalancingMiddleware:
    """ASGI middleware: counts this worker's HTTP requests in ``slot`` and closes the
    connection after a response while the worker is above its share.
    """

    def __init__(self, app: Any, slot: WorkerSlot) -> None:
        self.app = app
        self.slot = slot

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.slot.over_share():
                message = {**message, "headers": [*message.get("headers", ()), CLOSE_HEADER]}
            await send(message)

        self.slot.started()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.slot.finished()
