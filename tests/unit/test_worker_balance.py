"""uq_guard_server.balance: a worker above its share of the requests in flight closes
the connection after answering; the shared table of requests in flight per worker.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from typing import Any

import pytest
from uq_guard_server.balance import CLOSE_HEADER, RebalancingMiddleware, WorkerLoads, WorkerSlot
from uq_guard_server.workers import WorkerListener, balances_connections, reserve_address


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(done.stdout)


def busy(slot: WorkerSlot, requests: int) -> WorkerSlot:
    for _ in range(requests):
        slot.started()
    return slot


def test_one_worker_alone_is_never_over_its_share() -> None:
    loads = WorkerLoads(4)
    only = loads.claim()
    assert only is not None
    assert not busy(only, 20).over_share()


@pytest.mark.parametrize(
    ("mine", "other", "over"),
    [
        (14, 6, True),  # measured: 20 connections hashed 14/6 over 2 workers
        (11, 9, True),
        (10, 10, False),
        (11, 10, False),  # 21 in flight: 11 is the ceiling of the share
        (6, 0, True),
        (3, 3, False),
        (0, 5, False),
    ],
)
def test_a_worker_is_over_its_share_above_the_ceiling_of_total_over_workers(
    mine: int, other: int, over: bool
) -> None:
    loads = WorkerLoads(4)
    me, them = loads.claim(), loads.claim(os.getppid())
    assert me is not None and them is not None
    busy(them, other)
    assert busy(me, mine).over_share() is over


def test_finished_requests_leave_the_count() -> None:
    loads = WorkerLoads(2)
    me, them = loads.claim(), loads.claim(os.getppid())
    assert me is not None and them is not None
    busy(me, 3)
    assert me.over_share()
    for _ in range(3):
        me.finished()
    assert me.in_flight == 0 and not me.over_share()


def test_claims_take_free_rows_then_rows_of_exited_processes_then_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loads = WorkerLoads(2)
    exited = loads.claim(gone_pid())
    alive = loads.claim(os.getppid())
    assert exited is not None and alive is not None
    busy(exited, 7)  # a worker killed with requests in flight
    restarted = loads.claim()
    assert restarted is not None
    assert restarted.in_flight == 0  # its row starts afresh
    assert loads.claim(os.getppid()) is None  # both rows held by live processes
    assert "no free row" in caplog.text


def test_a_released_row_is_free_and_counts_no_worker() -> None:
    loads = WorkerLoads(2)
    me, them = loads.claim(), loads.claim(os.getppid())
    assert me is not None and them is not None
    busy(me, 4)
    them.release()
    assert not me.over_share()  # alone again
    assert loads.claim(os.getppid()) is not None


def test_a_table_needs_a_row() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        WorkerLoads(0)


class Recorder:
    """An ASGI app that answers 200 and records the requests in flight it saw."""

    def __init__(self, slot: WorkerSlot, fail: bool = False) -> None:
        self.slot, self.fail, self.seen = slot, fail, -1

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen = self.slot.in_flight
        if self.fail:
            raise RuntimeError("the app failed")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})


def respond(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "method": "GET", "path": "/"}, receive, send))
    return sent


def test_the_middleware_closes_the_connection_only_above_the_share() -> None:
    loads = WorkerLoads(2)
    me, them = loads.claim(), loads.claim(os.getppid())
    assert me is not None and them is not None
    inner = Recorder(me)
    app = RebalancingMiddleware(inner, me)

    busy(them, 2)
    balanced = respond(app)  # 1 in flight here (this one), 2 there
    assert inner.seen == 1 and me.in_flight == 0
    assert balanced[0]["headers"] == [(b"x-a", b"1")]

    busy(me, 3)  # 4 here with the next one, 2 there: over ceil(6 / 2)
    crowded = respond(app)
    assert crowded[0]["headers"] == [(b"x-a", b"1"), CLOSE_HEADER]
    assert crowded[1] == {"type": "http.response.body", "body": b"ok"}
    assert me.in_flight == 3


def test_a_failed_request_leaves_the_count() -> None:
    loads = WorkerLoads(1)
    me = loads.claim()
    assert me is not None
    with pytest.raises(RuntimeError, match="the app failed"):
        respond(RebalancingMiddleware(Recorder(me, fail=True), me))
    assert me.in_flight == 0


def test_a_lifespan_scope_passes_through_uncounted() -> None:
    loads = WorkerLoads(1)
    me = loads.claim()
    assert me is not None
    scopes: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        assert me.in_flight == 0

    app = RebalancingMiddleware(inner, me)
    asyncio.run(app({"type": "lifespan"}, None, None))
    assert scopes == ["lifespan"]


def _child_unpickles(listener: WorkerListener, conn: Any) -> None:
    sock = listener  # unpickled: the worker's own socket
    try:
        from uq_guard_server.workers import worker_slot

        slot = worker_slot()
        assert slot is not None
        slot.started()
        conn.send(os.getpid())
        conn.recv()  # hold the row until the parent has read the table
    finally:
        sock.close()  # type: ignore[attr-defined]


@pytest.mark.skipif(not balances_connections(), reason="SO_REUSEPORT listeners on Linux only")
def test_a_spawned_worker_claims_a_row_the_parent_sees() -> None:
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    with reserve_address("127.0.0.1", 0) as reservation:
        loads = WorkerLoads(2)
        listener = WorkerListener("127.0.0.1", reservation.getsockname()[1], loads)
        parent, child = context.Pipe()
        process = context.Process(target=_child_unpickles, args=(listener, child))
        process.start()
        try:
            pid = parent.recv()
            rows = list(loads.table.get_obj())
            parent.send("done")
        finally:
            process.join(timeout=30)
    assert process.exitcode == 0
    assert rows == [pid, 1, 0, 0]  # its row: its pid, one request in flight
    assert list(loads.table.get_obj()) == [0, 0, 0, 0]  # given back as it exited


def test_a_listener_with_a_table_travels_only_into_a_spawning_worker() -> None:
    import pickle

    listener = WorkerListener("127.0.0.1", 0, WorkerLoads(1))
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(listener)
