"""Run the proxy for a test: an ASGI app on uvicorn in a background thread
(:func:`serving`), or the real ``uq-guard serve`` command in a process of its
own (:func:`start_serve`), on a free port of 127.0.0.1; and another server
program for the duration of a block (:func:`serving_process`: llama.cpp's
server, the infinity embedding server).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, *, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` while the block runs; yields its base URL (``http://127.0.0.1:P``)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def start_serve(
    options: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    verbose: bool = True,
    startup_timeout_s: float = 180.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``uq-guard [-v] serve OPTIONS --port P``; returns the process and its base URL.

    Waits until ``/health`` answers. Output (both streams) goes to ``log``;
    ``env`` adds to this process's environment. Stop it with :func:`stop_serve`.
    """
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "uq_guard.cli", *(["-v"] if verbose else []), "serve"]
    command += [*options, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uq-guard serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"uq-guard serve did not start within {startup_timeout_s:.0f} s")
        time.sleep(0.25)


def stop_serve(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """Stop a :func:`start_serve` process as an operator would (SIGTERM); its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def connections(process: psutil.Process) -> list[Any]:
    """The TCP connections of ``process``."""
    listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return list(listing(kind="tcp"))


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
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections(child)
            )
        ]
        if len(listening) >= expected or time.monotonic() > deadline:
            return listening
        time.sleep(0.2)


@contextlib.contextmanager
def serving_process(
    command: Sequence[str],
    *,
    ready_url: str,
    name: str,
    hint: str = "",
    headers: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server program (``llama_cpp.server``, ``infinity_emb``) while the block runs.

    The block starts once ``GET ready_url`` (with ``headers``) answers 200.
    Output goes to a temporary file (a chatty server never blocks on a full
    pipe), whose end is quoted when the program exits early; ``env`` replaces
    the environment. The process is terminated (then killed) when the block ends.

    Raises:
        RuntimeError: it exited, or did not answer within ``startup_timeout_s``;
            the message names ``name`` and ends with ``hint`` (the setup step).
    """
    import httpx

    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
        )
        deadline = time.monotonic() + startup_timeout_s
        try:
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited ({process.returncode}): {tail}{hint}")
                try:
                    if httpx.get(ready_url, headers=headers, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not answer {ready_url} within {startup_timeout_s:.0f} s{hint}"
                    )
                time.sleep(0.25)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
