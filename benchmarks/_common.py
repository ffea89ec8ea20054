"""What the benchmark scripts share: where NQ-Open dev is by default, one AUROC cell, tables,
and the closed-loop load of concurrent clients against a proxy (:func:`closed_loop_load`).

Each script takes its data as ``--data PATH``; the default is NQ-Open dev
from ``$UQ_GUARD_NQ_OPEN`` when set, else the ``data`` folder of ``shared``
beside the checkout (where these machines keep it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uq_guard.evaluation.metrics import evaluate

NQ_OPEN_DEV = Path(
    os.environ.get("UQ_GUARD_NQ_OPEN")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "nq_open_dev.jsonl"
)
"""The default question file of the NQ-Open benchmarks (override with ``--data``)."""


def auroc_cell(
    confidence: Sequence[float], correct: Sequence[bool], n_resamples: int = 1000
) -> str:
    """``0.834 [0.781, 0.884]``: AUROC with its 95% bootstrap interval (non-finite values left out).

    ``n/a`` without values, ``undefined (one class only)`` when every answer is
    right or every one is wrong.
    """
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=bool)
    known = np.isfinite(conf)
    if not known.any():
        return "n/a"
    summary = evaluate(
        conf[known], corr[known], n_resamples=n_resamples, seed=0, metrics=("auroc",)
    )
    interval = summary.metrics.get("auroc")
    return str(interval) if interval is not None else "undefined (one class only)"


def emit(lines: Sequence[str], out: Path | None) -> None:
    """Print a benchmark's table, and write it to ``out`` (markdown) when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, its columns padded to line up in a terminal too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return lines


@dataclass
class LoadResult:
    """What :func:`closed_loop_load` saw.

    Attributes:
        latencies: seconds of every served request (status 200 with an ``uncertainty``).
        errors: the other answers, by kind (``"503"``, ``"ReadTimeout"``...).
        wall_s: the timed seconds.
        closed_by_server: answers that closed their connection (``Connection: close``).
    """

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    closed_by_server: int = 0

    def cells(self) -> tuple[str, str, str, str, str]:
        """``requests``, ``req/s``, ``p50 s``, ``p95 s``, ``errors`` as table cells."""
        done = self.latencies
        p95 = statistics.quantiles(done, n=20)[18] if len(done) > 1 else float("nan")
        return (
            str(len(done)),
            f"{len(done) / self.wall_s:.2f}" if self.wall_s else "-",
            f"{statistics.median(done):.2f}" if done else "-",
            f"{p95:.2f}" if len(done) > 1 else "-",
            str(sum(self.errors.values())),
        )


async def closed_loop_load(
    url: str,
    clients: int,
    seconds: float,
    body: Callable[[], dict[str, Any]],
    *,
    warmup_s: float = 0.0,
    at_start: Callable[[], None] | None = None,
    at_end: Callable[[], None] | None = None,
) -> LoadResult:
    """``clients`` clients, each sending its next chat request when its last is answered.

    Args:
        url: the proxy's base URL (``http://host:port``).
        clients: concurrent clients, sharing a pool of as many kept-alive connections.
        seconds: timed seconds: the requests answered in them are counted (those still
            in flight at their end are awaited, not counted).
        body: the body of the next request.
        warmup_s: untimed seconds first, by the same clients on the same
            connections (a request answered in them is not counted).
        at_start: called when the timed seconds begin (to read CPU counters).
        at_end: called when they end.
    """
    import httpx

    result = LoadResult()
    timed_from = time.perf_counter() + warmup_s
    deadline = timed_from + seconds

    async def timing() -> None:
        await asyncio.sleep(warmup_s)
        if at_start is not None:
            at_start()
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        if at_end is not None:
            at_end()

    async def client_loop(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/chat/completions", json=body())
                ok = response.status_code == 200 and "uncertainty" in response.json()
                kind = str(response.status_code)
                closing = response.headers.get("connection") == "close"
            except httpx.HTTPError as exc:
                ok, kind, closing = False, type(exc).__name__, False
            finished = time.perf_counter()
            if not timed_from <= finished <= deadline:
                continue  # answered in the warm-up, or after the timed seconds
            result.closed_by_server += closing
            if ok:
                result.latencies.append(finished - started)
            else:
                result.errors[kind] += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(timing(), *(client_loop(http) for _ in range(clients)))
    result.wall_s = seconds
    return result
