"""Is the proxy safe to expose? Fuzzing, a 200-request burst, memory.

Everything runs on 127.0.0.1, in a bounded count and time:

1. **Fuzzing.** The proxy (uvicorn, in this process) in front of a scripted
   upstream that fails one call in nine (a 500 quoting the upstream's key, or
   garbage). schemathesis generates requests from the proxy's own
   ``/openapi.json``, fitting the documented body and breaking it (the
   generator of ``tests/integration/test_server_fuzz.py``); then the
   hand-written hostile cases go to a proxy over a well-behaved upstream,
   each with the status it must get. Every response is checked
   (``tests.support.fuzz.problems``): no status of 500 or more but a 502/504
   that an upstream fault explains, no traceback, no credential, every
   refusal before any upstream call.
2. **Burst.** ``uq-guard serve`` in its own process at its default settings
   (only ``--upstream`` and ``--port`` given), in front of a fake upstream in
   another process that answers every call after a fixed 300 ms and honours
   ``n`` as OpenAI does. First the single-request latency (sequential
   requests after a warm-up), then 200 requests at once: how many were
   served, how many told to retry (429/503, each with ``Retry-After``),
   p50/p95 of the served ones against the single-request latency, the
   slowest ``/health`` during the burst, and the proxy's resident memory
   before, at its peak and after.
3. Writes ``benchmarks/results/reliability.md``.

Run: ``.venv/bin/python benchmarks/reliability.py [--fuzz-examples 600] [--burst 200]
[--sweep ACTIVE:QUEUE ...]`` (about 15 minutes on two busy cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reliability_burst import UPSTREAM_DELAY_S, BurstFigures, burst  # noqa: E402

from tests.support.fuzz import (  # noqa: E402
    CHAT_PATH,
    CLIENT_KEY,
    GUARD,
    HAND_WRITTEN,
    UPSTREAM_KEY,
    FaultyUpstream,
    Observed,
    call,
    case_strategy,
    problems,
)
from tests.support.serve import serving  # noqa: E402
from tests.support.upstream import ScriptedUpstream  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability.md"


# -- 1. fuzzing ------------------------------------------------------------------------


@dataclass
class FuzzFigures:
    generated: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    upstream_calls: int = 0
    upstream_faults: int = 0
    hand: list[tuple[str, int, int, int, float]] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(examples_per_mode: int) -> FuzzFigures:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from uq_guard_server import OpenAIUpstream, ServerSettings, create_app

    figures = FuzzFigures()
    started = time.perf_counter()
    target = FaultyUpstream()
    proxy_settings = ServerSettings(guard=GUARD, api_key=CLIENT_KEY, upstream_key=UPSTREAM_KEY)
    with target.upstream as upstream:
        app = create_app(OpenAIUpstream(upstream.base_url, api_key=UPSTREAM_KEY), proxy_settings)
        with serving(app) as url:
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            for mode in schemathesis.GenerationMode:
                label = mode.value

                @settings(
                    max_examples=examples_per_mode,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                @given(case=case_strategy(schema, mode))
                def run(case: Any) -> None:
                    seen: Observed = call(case, url, target)
                    figures.generated[(label, seen.status)] += 1  # noqa: B023 - run() runs here
                    for problem in problems(seen):
                        figures.problems.append(f"{case.method} {case.path}: {problem}")

                run()
                print(f"  fuzzed ({mode.value}): {sum(figures.generated.values())} so far")
        figures.upstream_calls, figures.upstream_faults = target.calls, target.faults

    # the hand-written cases, over an upstream that never fails: each status is exact
    with ScriptedUpstream(honour_n=False) as upstream:
        app = create_app(OpenAIUpstream(upstream.base_url, api_key=UPSTREAM_KEY), proxy_settings)
        with serving(app) as url, httpx.Client(timeout=600) as http:
            for case in HAND_WRITTEN:
                calls = len(upstream.bodies)
                t = time.perf_counter()
                response = http.post(f"{url}{CHAT_PATH}", content=case.body, headers=case.headers)
                elapsed = time.perf_counter() - t
                made = len(upstream.bodies) - calls
                figures.hand.append((case.name, case.expected, response.status_code, made, elapsed))
                seen = Observed(
                    response.status_code,
                    response.text,
                    dict(response.headers),
                    CHAT_PATH,
                    made,
                    0,
                )
                for problem in problems(seen):
                    figures.problems.append(f"hand-written '{case.name}': {problem}")
                if response.status_code != case.expected:
                    figures.problems.append(
                        f"hand-written '{case.name}': {response.status_code}, "
                        f"expected {case.expected}"
                    )
    figures.seconds = time.perf_counter() - started
    return figures


# -- 2. burst: benchmarks/reliability_burst.py --------------------------------------------


# -- 3. the report ------------------------------------------------------------------------


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def report(
    fuzzed: FuzzFigures,
    burst_: BurstFigures,
    command: str,
    sweep: list[tuple[str, BurstFigures]] | None = None,
) -> str:
    lines = [
        "# The proxy under hostile and heavy load",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}, on {os.cpu_count()} CPU cores "
        f"shared with other work (load average {os.getloadavg()[1]:.1f} over the last five "
        "minutes at the end); everything on 127.0.0.1. Method: the docstring of "
        "`benchmarks/reliability.py`.",
        "",
        "## Fuzzing",
        "",
    ]
    generated = sum(fuzzed.generated.values())
    lines += [
        f"{generated} requests generated by schemathesis from the proxy's `/openapi.json` "
        f"(positive: fitting the documented body; negative: breaking it), plus "
        f"{len(fuzzed.hand)} hand-written cases, in {fuzzed.seconds:.0f} s. The upstream "
        f"failed {fuzzed.upstream_faults} of its {fuzzed.upstream_calls} calls on purpose.",
        "",
        "| generated | status | responses |",
        "|---|---|---|",
    ]
    for (mode, status), count in sorted(fuzzed.generated.items()):
        lines.append(f"| {mode} | {status} | {count} |")
    over_500 = sum(c for (_, s), c in fuzzed.generated.items() if s >= 500 and s not in (502, 504))
    lines += [
        "",
        f"Statuses of 500 or more other than 502/504: **{over_500}**. "
        f"Problems found (a 5xx no upstream fault explains, a traceback, a credential, a "
        f"refusal after an upstream call, an error not in OpenAI's shape): "
        f"**{len(fuzzed.problems)}**.",
        "",
    ]
    lines += [f"- {p}" for p in fuzzed.problems[:20]]
    lines += [
        "",
        "Hand-written cases (hostile bodies, forbidden settings, oversized requests, "
        "and a few well-formed requests):",
        "",
        "| case | expected | got | upstream calls | s |",
        "|---|---|---|---|---|",
    ]
    for name, expected, got, made, seconds in fuzzed.hand:
        lines.append(f"| {name} | {expected} | {got} | {made} | {seconds:.2f} |")

    b = burst_
    single = statistics.median(b.single_s)
    p50, p95 = _p(b.served_s, 50), _p(b.served_s, 95)
    served = b.statuses.get(200, 0)
    retry = sum(b.statuses.get(s, 0) for s in (429, 503))
    other = sum(c for s, c in b.statuses.items() if s not in (200, 429, 503))
    back = (b.rss_after - b.rss_before) / b.rss_before
    lines += [
        "",
        f"## A burst of {sum(b.statuses.values())} requests at the default settings",
        "",
        f"`{b.command}` (its own process; defaults: 8 requests at work, 16 queued, the "
        f"default guard of 9 perturbations × 5 samples), in front of an upstream that "
        f"answers each call after {UPSTREAM_DELAY_S * 1000:.0f} ms and honours `n`. "
        "Each request asks a different question (the countries set).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| single request, median of {len(b.single_s)} sequential | {single:.2f} s |",
        f"| served (200) | {served} |",
        f"| told to retry (429/503), each with `Retry-After` | {retry} "
        f"({b.retry_after_missing} without) |",
        f"| any other status | {other} |",
        f"| served p50 | {p50:.2f} s ({p50 / single:.2f}× single) |",
        f"| served p95 | {p95:.2f} s ({p95 / single:.2f}× single) |",
        f"| burst wall time | {b.burst_wall_s:.1f} s |",
        f"| slowest `/health` during the burst | {b.health_max_s * 1000:.0f} ms |",
        f"| upstream calls (whole run) | {b.upstream_calls} |",
        f"| proxy RSS before | {_mb(b.rss_before)} |",
        f"| proxy RSS peak | {_mb(b.rss_peak)} |",
        f"| proxy RSS {b.rss_after_s:.0f} s after | {_mb(b.rss_after)} ({back:+.1%} of before) |",
        f"| the same burst again: RSS peak, {b.rss_after_s:.0f} s after | "
        f"{_mb(b.rss_peak_again)}, {_mb(b.rss_after_again)} "
        f"({(b.rss_after_again - b.rss_before) / b.rss_before:+.1%} of before) |",
        "",
        f"p95 ≤ 2× single: **{'yes' if p95 <= 2 * single else 'no'}**; memory back within "
        f"10%: **{'yes' if abs(back) <= 0.10 else 'no'}**.",
        "",
    ]
    if sweep:
        lines += [
            "Other admission limits, the same burst (each its own proxy process, its single "
            "latency measured in it):",
            "",
            "| serve options | single s | served | told to retry | p50 × single | "
            "p95 × single | RSS after vs before |",
            "|---|---|---|---|---|---|---|",
        ]
        for options, f in sweep:
            one = statistics.median(f.single_s)
            lines.append(
                f"| `{options}` | {one:.2f} | {f.statuses.get(200, 0)} | "
                f"{f.statuses.get(429, 0) + f.statuses.get(503, 0)} | "
                f"{_p(f.served_s, 50) / one:.2f} | {_p(f.served_s, 95) / one:.2f} | "
                f"{(f.rss_after - f.rss_before) / f.rss_before:+.1%} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-examples", type=int, default=600, help="per mode (two modes)")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--single", type=int, default=5, help="sequential requests timed")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before RSS after")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an option for the burst's `uq-guard serve` (repeatable; default: none)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="ACTIVE:QUEUE",
        help="also burst a proxy with these admission limits (repeatable)",
    )
    parser.add_argument("--skip-fuzz", action="store_true")
    parser.add_argument("--proxy-log", type=Path, help="where the burst's proxy logs (-v)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/reliability.py " + " ".join(sys.argv[1:])

    fuzzed = FuzzFigures() if args.skip_fuzz else fuzz(args.fuzz_examples)
    print(
        f"fuzzing done: {sum(fuzzed.generated.values())} generated, {len(fuzzed.problems)} problems"
    )
    burst_ = burst(args.burst, args.single, args.settle, args.proxy_log, args.serve_arg)
    sweep = []
    for limits in args.sweep:
        active, _, queue = limits.partition(":")
        options = ["--max-active-requests", active, "--max-queue", queue]
        print(f"burst with {' '.join(options)}")
        sweep.append(
            (" ".join(options), burst(args.burst, args.single, args.settle, None, options))
        )
    text = report(fuzzed, burst_, command.strip(), sweep)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
