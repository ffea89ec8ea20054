"""uq_guard_server.workers: a listener of its own in each worker, on the parent's port."""

from __future__ import annotations

import pickle
import socket

import pytest
from uq_guard_server.workers import (
    WorkerListener,
    balances_connections,
    reserve_address,
)

pytestmark = pytest.mark.skipif(
    not balances_connections(), reason="SO_REUSEPORT spreads connections on Linux only"
)


def test_port_zero_reserves_a_port_without_listening() -> None:
    with reserve_address("127.0.0.1", 0) as reservation:
        port = reservation.getsockname()[1]
        assert port > 0
        with pytest.raises(OSError):  # nothing accepts there: the parent gets no connection
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_each_unpickled_listener_is_a_new_socket_on_the_reserved_port() -> None:
    with reserve_address("127.0.0.1", 0) as reservation:
        port = reservation.getsockname()[1]
        listener = WorkerListener("127.0.0.1", port)
        first = pickle.loads(pickle.dumps(listener))
        second = pickle.loads(pickle.dumps(listener))
        try:
            assert isinstance(first, socket.socket) and isinstance(second, socket.socket)
            assert first.fileno() != second.fileno()
            assert first.getsockname() == second.getsockname() == ("127.0.0.1", port)
            assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            first.listen()
            second.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass  # one of the two listeners takes it
        finally:
            first.close()
            second.close()


def test_a_taken_port_is_an_error_in_the_parent() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:  # no SO_REUSEPORT: not shareable
        port = plain.getsockname()[1]
        with pytest.raises(OSError):
            reserve_address("127.0.0.1", port)


def test_a_worker_that_cannot_bind_exits_with_uvicorns_startup_failure() -> None:
    from uvicorn.config import STARTUP_FAILURE

    with socket.create_server(("127.0.0.1", 0)) as plain:
        listener = WorkerListener("127.0.0.1", plain.getsockname()[1])
        with pytest.raises(SystemExit) as stopped:
            pickle.loads(pickle.dumps(listener))
    assert stopped.value.code == STARTUP_FAILURE
