"""One round, not waves: a guarded call at several ``max_concurrency`` values against a plain call.

Against the controlled OpenAI-compatible upstream of ``tests/support/upstream.py``
(on 127.0.0.1, a fixed 300 ms per request), one
guarded call of 10 prompts × 5 samples through ``wrap_openai``
(``AsyncOpenAI``) at each ``max_concurrency``, and one plain (unguarded) call
of the same client, all in one run, interleaved, ``--repeats`` times; medians
are reported. Twice: an upstream that ignores ``n`` like llama.cpp's server
(1 reply + 50 sample requests a call) and one that honours it (1 + 10).

``generate s`` is the engine's own time in model rounds (the report's
``timings_ms["generate"]``): waves of ``max_concurrency`` requests show there
as multiples of 300 ms; the rest of the call is perturbation and scoring on
the CPU. The perturber is a fixed, model-free one so that only the calls and
the scoring are timed.

    .venv/bin/python benchmarks/concurrency.py --out benchmarks/results/performance/concurrency.md
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import openai
from _common import emit
from uq_guard_openai import wrap_openai

from uq_guard import GuardConfig
from uq_guard.embeddings import shared_embedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.upstream import MODEL, ScriptedUpstream
from tests.unit.model_free_parts import FixedVariants

DELAY_S = 0.3
N_PROMPTS, N_SAMPLES = 10, 5
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def answer(body: dict) -> str:
    # a little variety so the scorers have something to do
    return ["Paris.", "It is Paris.", "Paris is the capital of France."][len(str(body)) % 3]


async def timed_plain(client: openai.AsyncOpenAI) -> float:
    started = time.perf_counter()
    await client.chat.completions.create(model=MODEL, messages=QUESTION)
    return time.perf_counter() - started


async def timed_guarded(client: openai.AsyncOpenAI) -> tuple[float, float, int, int]:
    """Seconds of the call, seconds in model rounds, model calls, samples back."""
    started = time.perf_counter()
    resp = await client.chat.completions.create(model=MODEL, messages=QUESTION)
    elapsed = time.perf_counter() - started
    report = resp.uncertainty
    return elapsed, report.timings_ms["generate"] / 1000, report.cost.model_calls, report.n_samples


async def measure(
    honour_n: bool, levels: list[int], repeats: int
) -> list[tuple[str, str, str, str, str, str]]:
    with ScriptedUpstream(answer, honour_n=honour_n, delay_s=DELAY_S) as upstream:
        plain = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="none")
        guarded = {
            level: wrap_openai(
                openai.AsyncOpenAI(base_url=upstream.base_url, api_key="none"),
                perturber=FixedVariants(),
                n_perturbations=N_PROMPTS - 1,
                n_samples=N_SAMPLES,
                max_concurrency=level,
            )
            for level in levels
        }
        await timed_plain(plain)
        for client in guarded.values():  # warm-up: each wrapper learns what n does
            await timed_guarded(client)
        plain_s: list[float] = []
        runs: dict[int, list[tuple[float, float, int, int]]] = {level: [] for level in levels}
        for _ in range(repeats):  # interleaved, so a busy moment hits every level alike
            plain_s.append(await timed_plain(plain))
            for level, client in guarded.items():
                runs[level].append(await timed_guarded(client))
    base = statistics.median(plain_s)
    label = "honours n" if honour_n else "ignores n (llama.cpp)"
    rows = [(label, "plain call", "1", f"{base:.2f}", "-", "1.0×")]
    default = GuardConfig().max_concurrency
    for level in levels:
        total = statistics.median(r[0] for r in runs[level])
        generate = statistics.median(r[1] for r in runs[level])
        calls = runs[level][-1][2]
        assert all(r[3] == N_PROMPTS * N_SAMPLES for r in runs[level]), runs[level]
        name = f"{level} (default)" if level == default else str(level)
        rows.append(
            (label, name, str(calls), f"{total:.2f}", f"{generate:.2f}", f"{total / base:.1f}×")
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels", default="8,16,32,64", help="max_concurrency values (default: %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="calls per level (median)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    levels = sorted({int(v) for v in args.levels.split(",") if v.strip()})
    shared_embedder(None, None)  # load the embedder before timing anything

    lines = [
        "# One round, not waves: max_concurrency of an API-backed guarded call",
        "",
        "Produced by:",
        "",
        "```",
        " ".join(["benchmarks/concurrency.py", *sys.argv[1:]]),
        "```",
        "",
        f"One guarded call through `wrap_openai` (`AsyncOpenAI`), {N_PROMPTS} prompts × "
        f"{N_SAMPLES} samples, fixed model-free perturbation, against one plain call of the "
        f"same client, on an upstream of {DELAY_S * 1000:.0f} ms a request; medians of "
        f"{args.repeats} calls per row, interleaved, in one run. `generate s`: the engine's "
        "time in model rounds; the rest is perturbation and scoring on the CPU.",
        "",
        "| upstream | max_concurrency | model calls | call s | generate s | × plain |",
        "|---|---|---|---|---|---|",
    ]
    for honour_n in (False, True):
        rows = asyncio.run(measure(honour_n, levels, args.repeats))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
