"""What concurrency buys an API-backed guarded call, and what the proxy sustains.

Against a controlled OpenAI-compatible upstream on 127.0.0.1 that takes a
fixed 300 ms per request (``tests/support/upstream.py``):

1. **One guarded call** of 10 prompts × 5 samples through ``wrap_openai``
   (``AsyncOpenAI``), with concurrent requests against the very same calls
   made one at a time (``max_concurrency=1``); the ratio is taken in the same
   run. Twice: an upstream that honours ``n`` (11 calls) and one that ignores
   it like llama.cpp (51 calls).
2. **The proxy** (``uq_guard_server`` on uvicorn) under 20 concurrent clients
   for 30 s: requests/s, p50/p95 latency, errors.

The perturber is a fixed, model-free one so that only the calls are timed.
Run: ``.venv/bin/python benchmarks/latency.py [--seconds 30] [--clients 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import openai
from _common import closed_loop_load, table_lines
from uq_guard_openai import wrap_openai
from uq_guard_server import OpenAIUpstream, ServerPolicy, ServerSettings, create_app

from uq_guard import GuardConfig
from uq_guard.embeddings import shared_embedder
from uq_guard.perturb import PerturbationResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.serve import serving
from tests.support.upstream import MODEL, ScriptedUpstream

DELAY_S = 0.3
N_PROMPTS, N_SAMPLES = 10, 5
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class FixedVariants:
    """Nine rewordings made without any model call."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        variants = [f"Variant {i}: {prompt}" for i in range(1, m + 1)]
        return PerturbationResult(prompts=variants, method="fixed", n_requested=m)


def answer(body: dict) -> str:
    # a little variety so the scorers have something to do
    return ["Paris.", "It is Paris.", "Paris is the capital of France."][len(str(body)) % 3]


async def one_guarded_call(url: str, concurrency: int) -> tuple[float, int]:
    client = wrap_openai(
        openai.AsyncOpenAI(base_url=url, api_key="none"),
        perturber=FixedVariants(),
        n_perturbations=N_PROMPTS - 1,
        n_samples=N_SAMPLES,
        max_concurrency=concurrency,
    )
    started = time.perf_counter()
    resp = await client.chat.completions.create(model=MODEL, messages=QUESTION)
    elapsed = time.perf_counter() - started
    assert resp.uncertainty.n_samples == N_PROMPTS * N_SAMPLES, resp.uncertainty
    return elapsed, resp.uncertainty.cost.model_calls


async def concurrency_table() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for honour_n in (True, False):
        with ScriptedUpstream(answer, honour_n=honour_n, delay_s=DELAY_S) as upstream:
            await one_guarded_call(upstream.base_url, 16)  # warm-up: learns what n does
            concurrent, calls = await one_guarded_call(upstream.base_url, 16)
            sequential, _ = await one_guarded_call(upstream.base_url, 1)
        rows.append(
            (
                "honours n" if honour_n else "ignores n (llama.cpp)",
                str(calls),
                f"{sequential:.2f}",
                f"{concurrent:.2f}",
                f"{sequential / concurrent:.1f}×",
            )
        )
    return rows


def proxy_table(clients: int, seconds: float) -> list[tuple[str, ...]]:
    guard = GuardConfig(n_perturbations=N_PROMPTS - 1, n_samples=N_SAMPLES, max_concurrency=16)
    body = {"model": MODEL, "messages": QUESTION}
    with ScriptedUpstream(answer, delay_s=DELAY_S) as upstream:
        # Every client at work at once, each request at its own concurrency: the
        # figures measure the proxy, not its admission limits.
        settings = ServerSettings(
            guard=guard,
            policy=ServerPolicy(max_request_concurrency=guard.max_concurrency),
            max_active_requests=clients,
            max_queue=clients,
        )
        app = create_app(OpenAIUpstream(upstream.base_url), settings)
        with serving(app) as url:
            result = asyncio.run(closed_loop_load(url, clients, seconds, lambda: body))
    return [(str(clients), f"{result.wall_s:.0f}", *result.cells())]


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    print("\n".join(table_lines(header, rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    shared_embedder(None, None)  # load the embedder before timing anything

    print_table(
        f"One guarded call, {N_PROMPTS} prompts × {N_SAMPLES} samples, upstream "
        f"{DELAY_S * 1000:.0f} ms/request (max_concurrency 16 vs 1)",
        ("upstream", "calls", "sequential s", "concurrent s", "speed-up"),
        asyncio.run(concurrency_table()),
    )
    print_table(
        f"Proxy, {args.clients} concurrent clients for {args.seconds:.0f} s "
        f"(guarded: default GAAP perturbation, {N_PROMPTS} prompts × {N_SAMPLES} samples)",
        ("clients", "wall s", "requests", "req/s", "p50 s", "p95 s", "errors"),
        proxy_table(args.clients, args.seconds),
    )


if __name__ == "__main__":
    main()
