"""Proxy load: ``uq-guard serve`` with 1 and 2 workers under 20 clients for 30 s, in one run.

The real command (``python -m uq_guard.cli serve``, a process of its own, so
``--workers`` applies) at its default guard settings (GAAP, the default
embedder, 10 prompts × 5 samples), in front of an OpenAI-compatible upstream
(``tests/support/upstream.py``) in another process that takes 300 ms a
request and ignores ``n`` like llama.cpp's server, so a guarded request is
51 upstream calls (``--honour-n``: it returns ``n`` choices a call, as vLLM
and OpenAI do, and a guarded request is 11 calls). Each upstream answer is
drawn at random from the gold answers of NQ-Open dev, so answers differ
from call to call and caches do not make the work trivial; the clients ask
NQ-Open dev questions in turn.

Each client sends its next request when its last is answered (closed loop,
:func:`_common.closed_loop_load`); an error is any answer but a 200 with an
uncertainty report (a 503 included). The same clients first run untimed
for ``--warmup`` seconds on the connections they keep: the workers past
their first requests, and the connections spread over the workers
(:mod:`uq_guard_server.balance`) before timing. The admission settings (``--max-active-requests``,
``--max-queue``, per worker) are given to admit every client, and the table
names them with ``--max-request-concurrency``, the cap on one worker's
upstream calls in flight at the same settings.

    .venv/bin/python benchmarks/proxy_load.py --out benchmarks/results/performance/proxy_load.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from _common import NQ_OPEN_DEV, LoadResult, closed_loop_load, emit, table_lines
from uq_guard_server.policy import ServerPolicy

from uq_guard.evaluation.records import load_questions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.serve import start_serve, stop_serve, workers_of
from tests.support.upstream import MODEL, ScriptedUpstream

DELAY_S = 0.3


def cpu_seconds(process: psutil.Process) -> dict[int, float]:
    """User and system CPU time so far of ``process`` and of each child (the workers), by pid."""
    seconds = {}
    for each in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = each.cpu_times()
            seconds[each.pid] = times.user + times.system
    return seconds


def worker_split(before: dict[int, float], after: dict[int, float], main: int) -> str:
    """Each worker's share of the workers' CPU time between two readings ("61/39")."""
    used = sorted(
        (after[pid] - before.get(pid, 0.0) for pid in after if pid != main and after[pid] > 0.5),
        reverse=True,
    )  # multiprocessing's resource tracker, also a child, uses next to nothing
    total = sum(used)
    if len(used) < 2 or total <= 0:
        return "-"
    return "/".join(f"{100 * each / total:.0f}" for each in used)


def _serve_upstream(conn: Connection, answers: list[str], delay_s: float, honour_n: bool) -> None:
    """The upstream's process: serve until told to stop; report its calls on ``"stats"``."""
    pick = random.Random(0)
    with ScriptedUpstream(
        lambda body: pick.choice(answers), honour_n=honour_n, delay_s=delay_s
    ) as up:
        conn.send(up.base_url)
        while (message := conn.recv()) != "stop":
            if message == "stats":
                conn.send((len(up.bodies), up.max_in_flight))
                up.max_in_flight = up.in_flight


class UpstreamProcess:
    """A :class:`ScriptedUpstream` in a process of its own, not sharing the proxy's."""

    def __init__(self, answers: list[str], delay_s: float, *, honour_n: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_upstream, args=(child, answers, delay_s, honour_n), daemon=True
        )

    def __enter__(self) -> UpstreamProcess:
        self._process.start()
        self.base_url: str = self._conn.recv()
        return self

    @property
    def process(self) -> psutil.Process:
        """The upstream's process (for its CPU time)."""
        return psutil.Process(self._process.pid)

    def stats(self) -> tuple[int, int]:
        """Chat calls so far, and the most in flight at once since the last ``stats``."""
        self._conn.send("stats")
        calls, most = self._conn.recv()
        return int(calls), int(most)

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


def rotating_bodies(questions: list[str]) -> Callable[[], dict[str, Any]]:
    """Chat bodies asking ``questions`` in turn."""
    turn = itertools.cycle(questions)

    def body() -> dict[str, Any]:
        return {"model": MODEL, "messages": [{"role": "user", "content": next(turn)}]}

    return body


def run_one(
    upstream: UpstreamProcess,
    body: Callable[[], dict[str, Any]],
    *,
    workers: int,
    concurrency: int,
    args: argparse.Namespace,
) -> tuple[str, ...]:
    options = ["--upstream", upstream.base_url, "--workers", str(workers)]
    options += ["--max-request-concurrency", str(concurrency)]
    options += ["--max-active-requests", str(args.max_active_requests)]
    options += ["--max-queue", str(args.max_queue)]
    options += [f"--set={setting}" for setting in args.set]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.log"
        process, url = start_serve(options, log, verbose=False)
        try:
            serve = psutil.Process(process.pid)
            if workers > 1:  # /health answers once the first worker listens
                listening = workers_of(serve, int(url.rpartition(":")[2]), workers, 180)
                if len(listening) < workers:
                    raise RuntimeError(f"{len(listening)} of {workers} workers listen after 180 s")
            counters: list[tuple[tuple[int, int], dict[int, float], float, float]] = []

            def read_counters() -> None:
                counters.append(
                    (
                        upstream.stats(),  # the most in flight: since the last reading
                        cpu_seconds(serve),
                        sum(cpu_seconds(upstream.process).values()),
                        time.process_time(),
                    )
                )

            result: LoadResult = asyncio.run(
                closed_loop_load(
                    url,
                    args.clients,
                    args.seconds,
                    body,
                    warmup_s=args.warmup,
                    at_start=read_counters,
                    at_end=read_counters,
                )
            )
            ((calls_before, _), cpu_before, upstream_before, clients_before) = counters[0]
            ((calls, most_in_flight), cpu_after, upstream_after, clients_after) = counters[1]
            upstream_cpu = upstream_after - upstream_before
            clients_cpu = clients_after - clients_before
            cpu = sum(cpu_after.values()) - sum(cpu_before.values())
            split = worker_split(cpu_before, cpu_after, serve.pid)
        finally:
            stop_serve(process)
        if result.errors:
            print(f"errors {dict(result.errors)}; server log tail:\n{log.read_text()[-3000:]}")
    served = len(result.latencies)
    per_request = (calls - calls_before) / served if served else float("nan")
    return (
        str(workers),
        str(concurrency),
        *result.cells(),
        f"{per_request:.0f}",
        str(most_in_flight),
        f"{cpu / served:.2f}" if served else "-",
        f"{cpu / result.wall_s:.2f}",
        split,
        str(result.closed_by_server),
        f"{upstream_cpu / result.wall_s:.2f} / {clients_cpu / result.wall_s:.2f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--max-request-concurrency",
        type=int,
        nargs="+",
        default=[ServerPolicy().max_request_concurrency],
        help="one run per value and worker count (default: the server's default)",
    )
    parser.add_argument(
        "--max-active-requests", type=int, default=20, help="per worker (default 20)"
    )
    parser.add_argument("--max-queue", type=int, default=0, help="per worker (default 0)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="untimed seconds of the same clients first (default 10)",
    )
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a guard setting for uq-guard serve (repeatable; default: none, the defaults)",
    )
    parser.add_argument(
        "--honour-n",
        action="store_true",
        help="the upstream returns n choices a call, as vLLM and OpenAI do "
        "(default: it ignores n, as llama.cpp's server does)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    items = load_questions(args.data)
    questions = [item.question for item in items[: args.questions]]
    answers = sorted({answer for item in items for answer in item.gold})
    body = rotating_bodies(questions)
    load = psutil.getloadavg()[0]
    rows = []
    with UpstreamProcess(answers, DELAY_S, honour_n=args.honour_n) as upstream:
        for concurrency in args.max_request_concurrency:
            for workers in args.workers:
                rows.append(
                    run_one(upstream, body, workers=workers, concurrency=concurrency, args=args)
                )
                print(rows[-1], flush=True)

    command = ".venv/bin/python benchmarks/proxy_load.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Proxy load: `uq-guard serve` with 1 and 2 workers",
        "",
        "Produced by:",
        "",
        "```",
        command.strip(),
        "```",
        "",
        f"{args.clients} closed-loop clients for {args.seconds:.0f} s, after "
        f"{args.warmup:.0f} s untimed on the same connections, against `uq-guard serve` "
        "(a process of its own) at the default guard settings (GAAP, the default embedder, "
        f"10 prompts × 5 samples{''.join(', ' + x for x in args.set)}), "
        "in front of an upstream in another process that takes "
        f"{DELAY_S * 1000:.0f} ms a request and "
        + ("returns `n` choices a call" if args.honour_n else "ignores `n`")
        + " (answers drawn at random from "
        f"{len(answers)} NQ-Open gold answers; {len(questions)} NQ-Open dev questions asked "
        f"in turn). Admission per worker: `--max-active-requests {args.max_active_requests} "
        f"--max-queue {args.max_queue}`. `calls/req`: upstream calls per served request; "
        "`most in flight`: the upstream's peak of concurrent calls. `proxy CPU s/req`: "
        "CPU time of `uq-guard serve` and its workers per served request; `proxy cores "
        "busy`: that CPU time over the wall time; `workers' CPU %`: each worker's share "
        "of it, busiest first; `connections closed`: answers that closed their "
        "kept-alive connection (a worker above its share of the requests in flight); "
        "`upstream / clients cores busy`: the same for the upstream's "
        f"process and the clients' (this script's). {os.cpu_count()} CPU cores, shared by "
        f"the clients, the proxy and the upstream (load average {load:.1f} before the run).",
        "",
        *table_lines(
            (
                "workers",
                "max-request-concurrency",
                "requests",
                "req/s",
                "p50 s",
                "p95 s",
                "errors",
                "calls/req",
                "most in flight",
                "proxy CPU s/req",
                "proxy cores busy",
                "workers' CPU %",
                "connections closed",
                "upstream / clients cores busy",
            ),
            rows,
        ),
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
