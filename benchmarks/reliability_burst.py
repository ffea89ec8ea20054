"""The burst half of ``benchmarks/reliability.py``: ``uq-guard serve`` at its defaults, hit at once.

The method is in ``benchmarks/reliability.py``'s docstring; run that script, not this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fuzz import CHAT_PATH  # noqa: E402
from tests.support.serve import free_port  # noqa: E402
from tests.support.upstream import MODEL  # noqa: E402

UPSTREAM_DELAY_S = 0.3
QUESTIONS = ROOT / "benchmarks" / "datasets" / "countries.jsonl"


_UPSTREAM_PROCESS = """
import sys
sys.path.insert(0, {root!r})
from tests.support.upstream import ScriptedUpstream

def answer(body):
    # a little variety, so that the scorers have something to do
    return ["Paris.", "It is Paris.", "The answer is Paris."][len(str(body)) % 3]

with ScriptedUpstream(answer, honour_n=True, delay_s={delay}) as upstream:
    print(upstream.port, flush=True)
    sys.stdin.read()  # until the benchmark closes stdin
"""


@dataclass
class BurstFigures:
    single_s: list[float]
    statuses: Counter[int]
    retry_after_missing: int
    served_s: list[float]
    health_max_s: float
    rss_before: int
    rss_peak: int
    rss_after: int
    rss_after_s: float
    rss_peak_again: int
    rss_after_again: int
    burst_wall_s: float
    upstream_calls: int
    command: str


def _questions(n: int) -> list[str]:
    rows = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line]
    return [rows[i % len(rows)] for i in range(n)]


def _chat(question: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}]}


class _PeakRSS(threading.Thread):
    """Samples a process's resident memory every 20 ms while running."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self._done = process, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def burst(
    n_requests: int,
    n_single: int,
    settle_s: float,
    proxy_log: Path | None = None,
    serve_args: list[str] | None = None,
) -> BurstFigures:
    upstream = subprocess.Popen(
        [sys.executable, "-c", _UPSTREAM_PROCESS.format(root=str(ROOT), delay=UPSTREAM_DELAY_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert upstream.stdout is not None and upstream.stdin is not None
    upstream_url = f"http://127.0.0.1:{int(upstream.stdout.readline())}/v1"
    port = free_port()
    argv = ["-m", "uq_guard.cli", *(["-v"] if proxy_log else []), "serve"]
    argv += ["--upstream", upstream_url, "--port", str(port), *(serve_args or [])]
    command = " ".join(
        ["uq-guard serve --upstream http://127.0.0.1:<port>/v1 --port <port>", *(serve_args or [])]
    )
    log = open(proxy_log or os.devnull, "wb")  # noqa: SIM115 - closed in finally
    proxy = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, proxy)
        figures = asyncio.run(_burst(url, proxy, n_requests, n_single, settle_s))
        metrics = httpx.get(f"{url}/metrics").text.splitlines()
        total = next(m for m in metrics if m.startswith("uq_guard_upstream_calls_total "))
        figures.upstream_calls = int(float(total.split()[1]))
        figures.command = command
        return figures
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        upstream.stdin.close()
        upstream.wait(timeout=30)
        log.close()


def _wait_for(url: str, proxy: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise RuntimeError("uq-guard serve exited")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("uq-guard serve did not start")


async def _burst(
    url: str, proxy: subprocess.Popen[bytes], n_requests: int, n_single: int, settle_s: float
) -> BurstFigures:
    process = psutil.Process(proxy.pid)
    questions = _questions(3 + n_single + n_requests)
    limits = httpx.Limits(max_connections=n_requests + 16, max_keepalive_connections=n_requests)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        for question in questions[:3]:  # warm-up: the first calls learn what the upstream does
            (await http.post(CHAT_PATH, json=_chat(question))).raise_for_status()
        single = []
        for question in questions[3 : 3 + n_single]:
            t = time.perf_counter()
            (await http.post(CHAT_PATH, json=_chat(question))).raise_for_status()
            single.append(time.perf_counter() - t)
        await asyncio.sleep(2.0)
        rss_before = process.memory_info().rss

        async def timed(question: str) -> tuple[httpx.Response, float]:
            t = time.perf_counter()
            response = await http.post(CHAT_PATH, json=_chat(question))
            return response, time.perf_counter() - t

        async def health_probe(done: asyncio.Event) -> float:
            slowest = 0.0
            while not done.is_set():
                t = time.perf_counter()
                (await http.get("/health")).raise_for_status()
                slowest = max(slowest, time.perf_counter() - t)
                await asyncio.sleep(0.25)
            return slowest

        async def one_burst() -> tuple[list[tuple[httpx.Response, float]], float, float, int]:
            sampler = _PeakRSS(process)
            sampler.start()
            done = asyncio.Event()
            probe = asyncio.create_task(health_probe(done))
            started = time.perf_counter()
            results = await asyncio.gather(*(timed(q) for q in questions[3 + n_single :]))
            wall = time.perf_counter() - started
            done.set()
            return results, wall, await probe, sampler.stop()

        results, wall, health_max, rss_peak = await one_burst()
        await asyncio.sleep(settle_s)
        rss_after = process.memory_info().rss
        # the same burst again: does memory keep growing, or was that the high-water mark?
        *_, rss_peak_again = await one_burst()
        await asyncio.sleep(settle_s)
        rss_after_again = process.memory_info().rss

    statuses = Counter(r.status_code for r, _ in results)
    told_to_retry = [r for r, _ in results if r.status_code in (429, 503)]
    return BurstFigures(
        single_s=single,
        statuses=statuses,
        retry_after_missing=sum("retry-after" not in r.headers for r in told_to_retry),
        served_s=[s for r, s in results if r.status_code == 200],
        health_max_s=health_max,
        rss_before=rss_before,
        rss_peak=max(rss_peak, rss_before),
        rss_after=rss_after,
        rss_after_s=settle_s,
        rss_peak_again=rss_peak_again,
        rss_after_again=rss_after_again,
        burst_wall_s=wall,
        upstream_calls=0,
        command="",
    )
