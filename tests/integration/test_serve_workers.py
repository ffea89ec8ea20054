"""``uq-guard serve --workers 2``: the real command, two worker processes, both serving.

Which worker served is read from the operating system, not from the
responses (they name no process): a worker is a child of ``uq-guard serve``
that holds the listening socket, and a worker served guarded requests when
it holds connections to the upstream (the openai client keeps them alive
for a few seconds after its calls).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from uq_guard_server.workers import balances_connections

from tests.integration.test_server import QUESTION
from tests.support.serve import start_serve, stop_serve
from tests.support.upstream import MODEL, ScriptedUpstream

LIGHT = ["perturbation=none", "n_perturbations=0", "n_samples=3"]


def _connections(process: psutil.Process) -> list[Any]:
    connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return list(connections(kind="tcp"))


def workers_of(
    serve: psutil.Process, port: int, expected: int = 2, timeout_s: float = 60.0
) -> list[psutil.Process]:
    """The children of ``serve`` that listen on ``port``, once ``expected`` of them do.

    ``/health`` answers as soon as one worker listens; the others may still be
    starting. Gives what listens after ``timeout_s`` if fewer do.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        listening = [
            child
            for child in serve.children()
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in _connections(child)
            )
        ]
        if len(listening) >= expected or time.monotonic() > deadline:
            return listening
        time.sleep(0.2)


def calls_upstream(worker: psutil.Process, upstream_port: int) -> bool:
    return any(c.raddr and c.raddr.port == upstream_port for c in _connections(worker))


async def burst(url: str, size: int) -> list[httpx.Response]:
    """``size`` guarded requests at once, each on a connection of its own."""
    body = {"model": MODEL, "messages": QUESTION}
    async with httpx.AsyncClient(timeout=60) as http:
        return list(
            await asyncio.gather(
                *(http.post(f"{url}/v1/chat/completions", json=body) for _ in range(size))
            )
        )


@pytest.mark.slow
def test_two_workers_both_serve_and_stop_with_the_command(tmp_path: Path) -> None:
    options = ["--workers", "2", "--max-active-requests", "8", "--max-queue", "8"]
    options += [f"--set={s}" for s in LIGHT]
    with ScriptedUpstream(honour_n=False, delay_s=0.2) as upstream:
        process, url = start_serve(
            ["--upstream", upstream.base_url, *options], tmp_path / "serve.log"
        )
        try:
            serve = psutil.Process(process.pid)
            workers = workers_of(serve, int(url.rpartition(":")[2]))
            responses: list[httpx.Response] = []
            served: set[int] = set()
            for _ in range(5):  # the kernel picks the worker of each connection
                responses += asyncio.run(burst(url, 8))
                served |= {w.pid for w in workers if calls_upstream(w, upstream.port)}
                if len(served) == 2:
                    break
        finally:
            status = stop_serve(process)
    assert len(workers) == 2 and serve.pid not in {w.pid for w in workers}
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert all(r.json()["uncertainty"]["n_samples"] == 3 for r in responses)
    assert served == {w.pid for w in workers}
    assert status == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_workers_on_a_taken_port_stop_with_a_message(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "uq_guard.cli", "serve", "--workers", "2"]
        done = subprocess.run(
            [*command, "--upstream", "http://127.0.0.1:9/v1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.skipif(not balances_connections(), reason="SO_REUSEPORT spreads on Linux only")
def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    with ScriptedUpstream() as upstream:
        process, url = start_serve(
            ["--upstream", upstream.base_url, "--workers", "2"], tmp_path / "log"
        )
        try:
            serve = psutil.Process(process.pid)
            port = int(url.rpartition(":")[2])
            workers = workers_of(serve, port)
            sockets = {  # the kernel's socket behind each worker's listening descriptor
                os.readlink(f"/proc/{w.pid}/fd/{c.fd}")
                for w in workers
                for c in _connections(w)
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            }
            parent_listens = any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in _connections(serve)
            )
        finally:
            stop_serve(process)
    assert len(workers) == 2
    assert len(sockets) == 2  # uvicorn's shared socket would be one, in the parent too
    assert not parent_listens
