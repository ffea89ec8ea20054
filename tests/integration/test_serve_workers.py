"""``uq-guard serve --workers 2``: the real command, two worker processes, both serving.

Which worker served is read from the operating system, not from the
responses (they name no process): a worker is a child of ``uq-guard serve``
that holds the listening socket, and a worker served guarded requests when
it holds connections to the upstream (the openai client keeps them alive
for a few seconds after its calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from uq_guard_server.workers import balances_connections

from tests.integration.test_server import QUESTION
from tests.support.serve import connections, start_serve, stop_serve, workers_of
from tests.support.upstream import MODEL, ScriptedUpstream

LIGHT = ["perturbation=none", "n_perturbations=0", "n_samples=3"]


def calls_upstream(worker: psutil.Process, upstream_port: int) -> bool:
    return any(c.raddr and c.raddr.port == upstream_port for c in connections(worker))


async def burst(url: str, size: int) -> list[httpx.Response]:
    """``size`` guarded requests at once, each on a connection of its own."""
    body = {"model": MODEL, "messages": QUESTION}
    async with httpx.AsyncClient(timeout=60) as http:
        return list(
            await asyncio.gather(
                *(http.post(f"{url}/v1/chat/completions", json=body) for _ in range(size))
            )
        )


@dataclass
class TwoWorkers:
    """``uq-guard serve --workers 2`` at light settings in front of a scripted upstream."""

    upstream: ScriptedUpstream
    process: subprocess.Popen[bytes]
    url: str
    port: int
    workers: list[psutil.Process]


@contextlib.contextmanager
def two_workers(tmp_path: Path, delay_s: float) -> Iterator[TwoWorkers]:
    options = ["--workers", "2", "--max-active-requests", "8", "--max-queue", "8"]
    options += [f"--set={s}" for s in LIGHT]
    with ScriptedUpstream(honour_n=False, delay_s=delay_s) as upstream:
        process, url = start_serve(
            ["--upstream", upstream.base_url, *options], tmp_path / "serve.log"
        )
        try:
            port = int(url.rpartition(":")[2])
            workers = workers_of(psutil.Process(process.pid), port)
            yield TwoWorkers(upstream, process, url, port, workers)
        finally:
            stop_serve(process)


@pytest.mark.slow
def test_two_workers_both_serve_and_stop_with_the_command(tmp_path: Path) -> None:
    with two_workers(tmp_path, delay_s=0.2) as serving:
        workers = serving.workers
        responses: list[httpx.Response] = []
        served: set[int] = set()
        for _ in range(5):  # the kernel picks the worker of each connection
            responses += asyncio.run(burst(serving.url, 8))
            served |= {w.pid for w in workers if calls_upstream(w, serving.upstream.port)}
            if len(served) == 2:
                break
        status = stop_serve(serving.process)
    assert len(workers) == 2 and serving.process.pid not in {w.pid for w in workers}
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
                for c in connections(w)
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            }
            parent_listens = any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections(serve)
            )
        finally:
            stop_serve(process)
    assert len(workers) == 2
    assert len(sockets) == 2  # uvicorn's shared socket would be one, in the parent too
    assert not parent_listens


def server_side_owner(workers: list[psutil.Process], client_port: int) -> int | None:
    """The pid of the worker holding the server end of the connection from ``client_port``."""
    for worker in workers:
        if any(c.raddr and c.raddr.port == client_port for c in connections(worker)):
            return worker.pid
    return None


def connections_by_worker(
    host: str, port: int, workers: list[psutil.Process], wanted: int
) -> list[http.client.HTTPConnection]:
    """Kept-alive connections to ``host:port``, opened until ``wanted`` are on one worker."""
    by_worker: dict[int, list[http.client.HTTPConnection]] = {}
    opened: list[http.client.HTTPConnection] = []
    while max((len(group) for group in by_worker.values()), default=0) < wanted:
        assert len(opened) < 20 * wanted, "the kernel never put enough connections on one worker"
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.connect()
        opened.append(connection)
        client_port = connection.sock.getsockname()[1]
        deadline = time.monotonic() + 10
        while (owner := server_side_owner(workers, client_port)) is None:
            assert time.monotonic() < deadline, "no worker accepted the connection"
            time.sleep(0.05)
        by_worker.setdefault(owner, []).append(connection)
    crowded = max(by_worker.values(), key=len)[:wanted]
    for connection in opened:
        if connection not in crowded:
            connection.close()
    return crowded


def ask(connection: http.client.HTTPConnection) -> tuple[int, str | None, int]:
    """Status and ``Connection`` header of a guarded request, and the connection's client port."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    body = json.dumps({"model": MODEL, "messages": QUESTION})
    connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("connection"), client_port


def held_after_closing(
    workers: list[psutil.Process], closing: list[int], kept: list[int]
) -> list[int]:
    """Which of ``closing + kept`` a worker holds once ``closing`` are let go (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        held = [p for p in closing + kept if server_side_owner(workers, p) is not None]
        if time.monotonic() > deadline or not set(held) & set(closing):
            return held
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not balances_connections(), reason="SO_REUSEPORT spreads on Linux only")
def test_a_worker_above_its_share_closes_connections_after_answering(tmp_path: Path) -> None:
    with two_workers(tmp_path, delay_s=0.5) as serving:
        crowded = connections_by_worker("127.0.0.1", serving.port, serving.workers, wanted=6)
        with ThreadPoolExecutor(len(crowded)) as pool:  # 6 in flight on one worker
            answers = list(pool.map(ask, crowded))
        closing = [p for _, header, p in answers if header == "close"]
        kept = [p for _, header, p in answers if header != "close"]
        held = held_after_closing(serving.workers, closing, kept)
    assert [status for status, _, _ in answers] == [200] * 6
    # with the other worker idle, a worker is over its share while it holds 2 or more
    assert len(closing) >= 5
    assert sorted(held) == sorted(kept)  # the server closed those it said it would, only those
