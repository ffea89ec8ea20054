"""What the engine's vectorised parts buy, measured in one run.

Two comparisons on 10 NQ-Open questions × 5 sampled answers (the size of one
guarded call with the default budget):

1. **Embedding + scoring.** uq_guard's scoring step (one batched encode of the
   distinct texts, one matrix product, Inv-Entropy with a vectorised
   bootstrap, plus every baseline) against a reference-style pipeline as the
   authors' code does it: one ``encode`` per text, the similarity matrices
   filled entry by entry in Python, and a Python loop over the bootstrap
   draws. Both give the same Inv-Entropy (checked).
2. **Generation.** One batched, left-padded ``generate`` of all 10 × 5 answers
   on the local SmolLM2 against one ``generate`` per sample.

Run: ``.venv/bin/python benchmarks/engine_overhead.py [--repeats 3]``.
Ratios are taken within the same run because these machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import NQ_OPEN_DEV
from uq_guard_hf import HuggingFaceChatModel

from uq_guard.backend import GenerationRequest
from uq_guard.embeddings import SentenceTransformerEmbedder
from uq_guard.evaluation.records import load_questions
from uq_guard.scoring.suite import score_samples

N_PROMPTS, N_ANSWERS, N_BOOTSTRAP, MAX_TOKENS = 10, 5, 30, 32


# -- the reference-style pipeline -------------------------------------------


def reference_inv_entropy(
    prompts: list[str], answers: list[list[str]], encode_one: Callable[[str], np.ndarray]
) -> float:
    """Inv-Entropy as the reference code computes it: loops everywhere."""
    pair_prompts = [p for p, group in zip(prompts, answers, strict=True) for _ in group]
    pair_answers = [a for group in answers for a in group]
    x_vectors = [encode_one(text) for text in pair_prompts]
    y_vectors = [encode_one(text) for text in pair_answers]
    n = len(pair_answers)
    sim_x, sim_y = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            sim_x[i, j] = (1 + float(np.dot(x_vectors[i], x_vectors[j]))) / 2
            sim_y[i, j] = (1 + float(np.dot(y_vectors[i], y_vectors[j]))) / 2

    rng = np.random.default_rng(0)
    values = []
    for _ in range(N_BOOTSTRAP):
        keep = [k * N_ANSWERS + int(rng.integers(N_ANSWERS)) for k in range(len(prompts))]
        size = len(keep)
        p_x, p_y = np.zeros((size, size)), np.zeros((size, size))
        for i in range(size):
            row_x = sum(sim_x[keep[i], keep[j]] for j in range(size))
            row_y = sum(sim_y[keep[i], keep[j]] for j in range(size))
            for j in range(size):
                p_x[i, j] = sim_x[keep[i], keep[j]] / row_x
                p_y[i, j] = sim_y[keep[i], keep[j]] / row_y
        h = 0.0
        for i in range(size):
            q_ii = sum(p_y[i, k] * p_x[k, i] for k in range(size))
            h -= q_ii * np.log(q_ii)
        values.append(h)
    return float(np.mean(values))


# -- timing ------------------------------------------------------------------


def median_seconds(
    run: Callable[[], object], repeats: int, before_each: Callable[[], None]
) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        before_each()
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_scoring(prompts: list[str], answers: list[list[str]], repeats: int) -> list[tuple]:
    # The model loads once, outside the timings; every timed call starts cold.
    embedder = SentenceTransformerEmbedder()
    embedder.encode(["warm-up"])

    def ours() -> float:
        scores = score_samples(
            embedder=embedder,
            prompts=prompts,
            answers=answers,
            reply=answers[0][0],
            n_bootstrap=N_BOOTSTRAP,
            seed=0,
        )
        return scores.scores["inv_entropy"]

    def reference() -> float:
        return reference_inv_entropy(
            prompts,
            answers,
            lambda text: embedder.model.encode([text], normalize_embeddings=True)[0],
        )

    reference_s, reference_value = median_seconds(reference, repeats, embedder.clear_cache)
    ours_s, ours_value = median_seconds(ours, repeats, embedder.clear_cache)
    agree = "agree" if abs(ours_value - reference_value) < 1e-9 else "DIFFER"
    print(
        f"Inv-Entropy: uq_guard {ours_value:.6f}, reference-style {reference_value:.6f} ({agree})"
    )
    return [
        ("embed + score (uq_guard: batched, vectorised, + baselines)", ours_s, 1.0),
        ("embed + score (reference-style loops)", reference_s, reference_s / ours_s),
    ]


async def bench_generation(model: HuggingFaceChatModel, prompts: list[str]) -> tuple:
    def request(prompt: str, n: int) -> GenerationRequest:
        return GenerationRequest(
            messages=({"role": "user", "content": prompt},),
            n=n,
            temperature=0.7,
            max_tokens=MAX_TOKENS,
        )

    started = time.perf_counter()
    batched = await model.generate([request(p, N_ANSWERS) for p in prompts])
    batched_s = time.perf_counter() - started

    started = time.perf_counter()
    for prompt in prompts:
        for _ in range(N_ANSWERS):
            await model.generate([request(prompt, 1)])
    one_by_one_s = time.perf_counter() - started

    answers = [generation.texts for generation in batched]
    rows = [
        (f"generate {len(prompts)}×{N_ANSWERS} (one batched call)", batched_s, 1.0),
        (
            f"generate {len(prompts)}×{N_ANSWERS} (one call per sample)",
            one_by_one_s,
            one_by_one_s / batched_s,
        ),
    ]
    return rows, answers


def print_table(rows: list[tuple]) -> None:
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{'step':<{width}}  {'seconds':>8}  {'× uq_guard':>10}")
    for name, seconds, ratio in rows:
        print(f"{name:<{width}}  {seconds:8.3f}  {ratio:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="scoring repeats (median)")
    parser.add_argument(
        "--data", type=Path, default=NQ_OPEN_DEV, help="question JSONL (NQ-Open dev)"
    )
    args = parser.parse_args()

    prompts = [item.question + "?" for item in load_questions(args.data, N_PROMPTS)]
    model = HuggingFaceChatModel.default(seed=0)
    model.invoke("warm-up")
    generation_rows, answers = asyncio.run(bench_generation(model, prompts))
    scoring_rows = bench_scoring(prompts, answers, args.repeats)
    print_table(scoring_rows + generation_rows)


if __name__ == "__main__":
    main()
