"""Admission: the active slots and the queue (beyond them 503 with ``Retry-After``), and the
wait for an answer that ends when the client disconnects or the request times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request

from uq_guard_server.errors import APIError

# the proxy's log lines carry one name, the app's, whichever module writes them
logger = logging.getLogger("uq_guard_server.app")

T = TypeVar("T")


class Admission:
    """At most ``active`` chat requests at work and ``queue`` waiting; beyond, 503."""

    def __init__(self, active: int, queue: int, retry_after_s: int) -> None:
        self._slots = asyncio.Semaphore(active)
        self._limit = active + queue
        self._admitted = 0
        self._retry_after = str(retry_after_s)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._admitted >= self._limit:
            raise APIError(
                503,
                "the server is busy: too many requests in progress; retry later",
                type="server_overloaded",
                code="queue_full",
                headers={"retry-after": self._retry_after},
            )
        self._admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def until_done_or_gone(work: Awaitable[T], request: Request, timeout_s: float) -> T:
    """``work``'s result, cancelling it when the client disconnects or ``timeout_s`` passes.

    Raises:
        ClientGone: the client disconnected (the work was cancelled).
        APIError: 504, ``timeout_s`` passed (the work was cancelled).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        deadline = time.monotonic() + timeout_s
        done, _ = await asyncio.wait(
            {task, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if watcher in done and task not in done:
            if watcher.exception() is None:
                raise ClientGone
            # The server could not tell whether the client is there: finish the work.
            logger.warning("watching for a disconnect failed: %r", watcher.exception())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        if task in done:
            return task.result()
        raise APIError(
            504,
            "no answer within the server's request timeout",
            type="upstream_error",
            code="timeout",
        )
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
