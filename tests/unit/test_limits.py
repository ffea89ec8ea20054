"""``ConcurrencyLimit``: one cap that holds across threads and event loops, and never leaks a slot.

A wrapper's Guard (and so its cap) outlives calls, and each sync call runs
on an event loop of its own, so the cap must hand slots across loops; a
caller cancelled while it waits (before or after a slot was handed to it)
must leave the slot to the next one.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from uq_guard._limits import ConcurrencyLimit


def test_a_limit_holds_across_threads_and_their_event_loops() -> None:
    limit = ConcurrencyLimit(2)
    lock = threading.Lock()
    seen = {"now": 0, "most": 0}

    async def work() -> None:
        for _ in range(3):
            async with limit:
                with lock:
                    seen["now"] += 1
                    seen["most"] = max(seen["most"], seen["now"])
                await asyncio.sleep(0.02)
                with lock:
                    seen["now"] -= 1

    threads = [threading.Thread(target=asyncio.run, args=(work(),)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen["most"] == 2 and limit.in_use == 0


async def test_a_waiter_cancelled_before_its_slot_is_handed_over_takes_none() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # cancelled while still waiting
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limit.release()
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)  # the slot came back, not to the dead waiter
    assert limit.in_use == 1


async def test_a_waiter_cancelled_after_its_slot_is_handed_over_gives_it_back() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    late = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # the slot is on its way to `late`...
    late.cancel()  # ...which is cancelled before it arrives: the slot must come back
    with pytest.raises(asyncio.CancelledError):
        await late
    for _ in range(3):
        await asyncio.sleep(0)
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)
    assert limit.in_use == 1


def test_a_limit_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(0)
