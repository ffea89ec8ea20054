"""How the perturbers compare on real questions: fidelity, diversity, completeness, speed.

For each NQ-Open question (``../shared/data/nq_open_dev.jsonl``) every
method is asked for m = 9 perturbations; the table reports, per method:

* **fidelity**: mean similarity ``a(x_0, x_i) = (1 + cos) / 2`` of each real
  perturbation to the original question (MiniLM embeddings; 1 = the same);
* **diversity**: mean pairwise cosine distance ``1 - cos(x_i, x_j)`` among a
  question's real perturbations (0 = all identical);
* **full set**: share of questions that got m real, distinct perturbations;
* **s/prompt**: wall time per question (model load excluded, embeddings
  cached across methods, so the first method pays the embedder warm-up).

Methods: ``gaap-wordnet`` (GAAP with WordNet: no model call),
``gaap-model`` (GAAP with the SmolLM2 model lexicon: one call per question),
``paraphrase`` (SmolLM2 asked for 9 paraphrases: one call per question).

Run: ``.venv/bin/python benchmarks/perturbation.py [--limit N] [--methods ...]``.
SmolLM2 is slow on two CPU cores; ``--model-limit`` caps the questions the
two SmolLM2 methods see (default: all of ``--limit``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np

from uq_guard.embeddings import shared_embedder
from uq_guard.perturb import (
    GAAPPerturber,
    ModelLexicon,
    ModelParaphraser,
    PerturbationResult,
    Perturber,
    WordNetLexicon,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nq_open_dev.jsonl"
METHODS = ("gaap-wordnet", "gaap-model", "paraphrase")
M = 9


def load_questions(limit: int) -> list[str]:
    with DATA.open() as lines:
        return [json.loads(line)["question"] for line in itertools.islice(lines, limit)]


def perturber_for(method: str, embedder, model) -> Perturber:
    if method == "gaap-wordnet":
        return GAAPPerturber(embedder, WordNetLexicon())
    if method == "gaap-model":
        return GAAPPerturber(embedder, ModelLexicon(model))
    return ModelParaphraser(model, temperature=0.7, max_tokens=48 * M + 64)


def quality(embedder, question: str, result: PerturbationResult) -> tuple[float, float]:
    """(mean fidelity, mean pairwise diversity) of the real perturbations; NaN when none."""
    real = list(dict.fromkeys(result.prompts[: result.real_count]))
    if not real:
        return float("nan"), float("nan")
    vectors = embedder.encode([question, *real]).astype(np.float64)
    fidelity = float(np.mean((1.0 + vectors[1:] @ vectors[0]) / 2.0))
    if len(real) < 2:
        return fidelity, 0.0
    cosines = vectors[1:] @ vectors[1:].T
    pairs = np.triu_indices(len(real), k=1)
    return fidelity, float(np.mean(1.0 - cosines[pairs]))


async def bench(method: str, questions: list[str], embedder, model) -> dict:
    perturber = perturber_for(method, embedder, model)
    fidelities, diversities, seconds, full, calls = [], [], [], 0, 0
    for question in questions:
        started = time.perf_counter()
        result = await perturber.perturb(question, M)
        seconds.append(time.perf_counter() - started)
        fidelity, diversity = quality(embedder, question, result)
        if not np.isnan(fidelity):
            fidelities.append(fidelity)
            diversities.append(diversity)
        full += result.real_count == M and len(set(result.prompts)) == M
        calls += result.usage.model_calls
    return {
        "method": method,
        "n": len(questions),
        "fidelity": statistics.fmean(fidelities) if fidelities else float("nan"),
        "diversity": statistics.fmean(diversities) if diversities else float("nan"),
        "full": full / len(questions),
        "s_per_prompt": statistics.fmean(seconds),
        "s_median": statistics.median(seconds),
        "calls_per_prompt": calls / len(questions),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'method':<14} {'questions':>9} {'fidelity':>9} {'diversity':>9} "
        f"{'full set':>9} {'s/prompt':>9} {'median s':>9} {'calls':>6}"
    )
    for row in rows:
        print(
            f"{row['method']:<14} {row['n']:>9} {row['fidelity']:>9.3f} {row['diversity']:>9.3f} "
            f"{row['full']:>9.1%} {row['s_per_prompt']:>9.3f} {row['s_median']:>9.3f} "
            f"{row['calls_per_prompt']:>6.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="questions (default 200)")
    parser.add_argument(
        "--model-limit", type=int, default=None, help="questions for the SmolLM2 methods"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()

    questions = load_questions(args.limit)
    embedder = shared_embedder()
    embedder.encode(["warm up the embedder"])
    await GAAPPerturber(embedder, WordNetLexicon()).perturb("warm up the lexicon", 1)
    model = None
    if any(method != "gaap-wordnet" for method in args.methods):
        from uq_guard_hf import HuggingFaceChatModel

        model = HuggingFaceChatModel.default(seed=0)
    rows = []
    for method in args.methods:
        subset = questions
        if method != "gaap-wordnet" and args.model_limit is not None:
            subset = questions[: args.model_limit]
        rows.append(await bench(method, subset, embedder, model))
        print_table(rows[-1:])
    print(f"\nm = {M} perturbations per question; NQ-Open dev questions from {DATA.name}")
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
