"""Worker processes that share the load evenly: one ``SO_REUSEPORT`` listener each.

uvicorn's ``--workers`` binds one socket in the parent and every worker
accepts from it. Whichever worker wakes first takes every connection waiting
(asyncio accepts up to the backlog at once), and a kept-alive connection
stays with the worker that took it: measured with 20 clients and 2 workers
(``benchmarks/proxy_load.py``), one worker did 74 % of the work and the
proxy served 5.7 requests a second, against 7.4 with the work split 50/50.

On Linux each worker here binds a socket of its own to the same address with
``SO_REUSEPORT``, and the kernel spreads new connections over the listening
sockets by a hash of their addresses. uvicorn's own supervisor still starts,
watches and restarts the workers (``uvicorn.supervisors.Multiprocess``): the
one socket it hands every worker it starts is a :class:`WorkerListener`,
which becomes a fresh socket of that worker's own when the worker unpickles
it. The parent holds the address with a socket that never listens (so it
gets no connection), which also fixes the port when ``--port 0`` asks the
system for one. Elsewhere (macOS spreads nothing with ``SO_REUSEPORT``,
Windows has none) uvicorn's shared socket is used as before.

Each worker also claims a row of a :class:`~uq_guard_server.balance.WorkerLoads`
table the parent makes (it travels inside the :class:`WorkerListener`), so
that a worker above its share of the requests in flight closes connections
until the kernel has spread them evenly (:mod:`uq_guard_server.balance`);
:func:`worker_slot` is the row of this process.

The workers also share the CPUs: :func:`share_embedding_threads` gives each
the usable CPUs over N as its int8 embedder's threads
(``$UQ_GUARD_EMBEDDING_THREADS``), so N workers do not run N times the
threads there are cores.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from uq_guard._cpus import usable_cpus
from uq_guard._onnx_embedding import THREADS_ENV, default_threads
from uq_guard_server.balance import WorkerLoads, WorkerSlot

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

__all__ = [
    "WorkerListener",
    "balances_connections",
    "reserve_address",
    "run_supervised",
    "share_embedding_threads",
    "worker_slot",
]

_slot: WorkerSlot | None = None


def worker_slot() -> WorkerSlot | None:
    """This worker's row of the parent's load table (None outside a supervised worker)."""
    return _slot


def share_embedding_threads(workers: int, environ: MutableMapping[str, str] | None = None) -> int:
    """The embedding threads each of ``workers`` processes gets: the usable CPUs over ``workers``.

    Sets ``$UQ_GUARD_EMBEDDING_THREADS`` in ``environ`` (default ``os.environ``,
    which the workers inherit) when there is more than one worker and the
    variable is not set; a value already set stands, checked here so that a
    bad one stops the command before any worker starts.

    Raises:
        ConfigurationError: the variable is set to something other than a positive int.
    """
    environ = os.environ if environ is None else environ
    if environ.get(THREADS_ENV, "").strip():
        return default_threads(environ)
    threads = max(1, usable_cpus() // workers)
    if workers > 1:
        environ[THREADS_ENV] = str(threads)
    return threads


def balances_connections() -> bool:
    """Whether this system spreads connections over ``SO_REUSEPORT`` listeners (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening yet."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def reserve_address(host: str, port: int) -> socket.socket:
    """The parent's socket on ``host:port``: bound, never listening (port 0 picks a free one).

    Raises:
        OSError: the address cannot be bound (in use by a process without
            ``SO_REUSEPORT``, or not an address of this machine).
    """
    return _reuse_port_socket(host, port)


def _worker_socket(host: str, port: int, loads: WorkerLoads | None = None) -> socket.socket:
    """Unpickling a :class:`WorkerListener` in a worker: its own socket, or a startup failure.

    Also claims this worker's row of ``loads`` (see :func:`worker_slot`).
    """
    from uvicorn.config import STARTUP_FAILURE

    global _slot
    try:
        sock = _reuse_port_socket(host, port)
    except OSError as exc:  # the supervisor stops on this status rather than retrying
        logger.error("uq-guard serve worker could not bind %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    if loads is not None:
        _slot = loads.claim()
    return sock


class WorkerListener:
    """Stands for a listening socket in the parent; pickles to a new one in each worker.

    With ``loads``, it pickles only while a worker is being spawned (the
    shared table's rule), and the worker claims a row of it.
    """

    def __init__(self, host: str, port: int, loads: WorkerLoads | None = None) -> None:
        self.host = host
        self.port = port
        self.loads = loads

    def __reduce__(self) -> tuple[object, tuple[str, int, WorkerLoads | None]]:
        return _worker_socket, (self.host, self.port, self.loads)


def run_supervised(config: uvicorn.Config, host: str, port: int) -> bool:
    """Run ``config.workers`` workers on ``host:port``, each with its own listener, until stopped.

    ``config`` is the workers' ``uvicorn.Config``; ``port`` is the reserved one
    (see :func:`reserve_address`). Returns False when a worker failed to start
    (the supervisor then stopped them all), else True.
    """
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    # uvicorn pickles this list into every worker it starts or restarts
    listeners: list = [WorkerListener(host, port, WorkerLoads(2 * config.workers))]
    supervisor = Multiprocess(config, sockets=listeners)
    logger.info("%d workers on http://%s:%d, one listener each", config.workers, host, port)
    supervisor.run()
    return not any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
