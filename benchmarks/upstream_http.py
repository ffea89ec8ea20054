"""The proxy's upstream HTTP: CPU per ``chat.completions.create`` call, aiohttp against httpx.

A guarded request the proxy serves is up to 51 upstream calls, so the SDK's
cost per call is part of the proxy's CPU per request. This times the SDK's
``create`` from the client the proxy builds (``OpenAIUpstream``: the SDK's
aiohttp transport when aiohttp is installed) against the SDK's default httpx
client, at 1, 10 and 50 calls in flight, against a local upstream in a
process of its own that answers at once. Rounds alternate between the two
clients; the table gives the median of the rounds.

    python benchmarks/upstream_http.py --out benchmarks/results/performance/upstream_http.md
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import psutil
from _common import emit, table_lines
from proxy_load import UpstreamProcess
from uq_guard_server.upstream import OpenAIUpstream

BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "who wrote the book the origin of species?"}],
    "temperature": 0.7,
    "max_tokens": 32,
    "timeout": 30,
}


async def cpu_ms_per_call(
    call: Callable[[], Awaitable[object]], calls: int, in_flight: int
) -> float:
    """CPU milliseconds of this process per ``call``, ``in_flight`` at once (after a warm-up)."""
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one() for _ in range(in_flight)))
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return 1000 * (time.process_time() - started) / calls


async def measure(base_url: str, calls: int, rounds: int, levels: list[int]) -> list[list[str]]:
    proxy = OpenAIUpstream(base_url, models=["m"]).client
    httpx_client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
    # what the proxy's client sends its HTTP with (the SDK keeps its httpx client private)
    transport = "aiohttp" if "aiohttp" in type(proxy._client._transport).__module__ else "httpx"
    clients = {f"the proxy's ({transport})": proxy, "SDK default (httpx)": httpx_client}
    rows = []
    for in_flight in levels:
        times: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, client in clients.items():
                times[name].append(
                    await cpu_ms_per_call(
                        lambda c=client: c.chat.completions.create(**BODY), calls, in_flight
                    )
                )
        baseline = statistics.median(times["SDK default (httpx)"])
        for name, values in times.items():
            median = statistics.median(values)
            rows.append(
                [
                    str(in_flight),
                    name,
                    f"{median:.2f}",
                    f"{min(values):.2f}–{max(values):.2f}",
                    f"{median / baseline:.2f}",
                ]
            )
    for client in clients.values():
        await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = psutil.getloadavg()[0]
    started = time.perf_counter()
    with UpstreamProcess(["Charles Darwin"], 0.0) as upstream:
        rows = asyncio.run(measure(upstream.base_url, args.calls, args.rounds, args.in_flight))
    lines = [
        "# The proxy's upstream HTTP transport",
        "",
        "```",
        "python " + " ".join(["benchmarks/upstream_http.py", *sys.argv[1:]]),
        "```",
        "",
        f"CPU time of the calling process per `chat.completions.create` call ({args.calls} calls "
        f"a round, {args.rounds} rounds alternating between the clients, median and range), "
        "against a local upstream in a process of its own that answers at once. `× httpx`: "
        "the median over the SDK default's median at the same number in flight. "
        f"openai {openai.__version__}, 2 CPU cores (load average {load:.1f} before the run).",
        "",
        *table_lines(["in flight", "client", "CPU ms/call", "range", "× httpx"], rows),
        f"({time.perf_counter() - started:.0f} s)",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
