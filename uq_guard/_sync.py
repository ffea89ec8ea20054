"""Run a coroutine from synchronous code, even inside a running event loop (Jupyter)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion and return its result.

    With no event loop running this is ``asyncio.run``; inside one (a
    notebook, an async framework calling sync code) the coroutine runs on a
    fresh loop in a worker thread, so the caller's loop is never re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uq_guard-sync") as pool:
        return pool.submit(context.run, asyncio.run, coroutine).result()
