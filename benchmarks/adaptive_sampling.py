"""What adaptive sampling saves on real questions, and what it costs in ranking quality.

The first ``--limit`` NQ-Open dev questions go to the local SmolLM2-135M-Instruct
through the full guard (GAAP perturbations, Inv-Entropy, every baseline) on a
small budget (4 perturbations × 4 samples of at most 24 tokens, so at most 20
sampled answers), each question twice with the same seeds: adaptive sampling
off and on (``GuardConfig.adaptive``, the default rule: 2 answers per prompt
in round 1, stop when they and the reply all fall in one semantic cluster).
With ``--margin M`` a third run adds ``adaptive_margin=M`` (also stop when
round 1's confidence is M or more from the 0.5 threshold). The order of the
runs rotates between questions so that warm caches favour none. The reply is
greedy and so the same in every run, hence so is its correctness (SQuAD-style
match against the gold answers).

Printed: mean samples drawn and model requests per question, wall seconds per
question, the share of calls that stopped early, the mean |Δ confidence|
against the run without adaptive sampling, and the AUROC of each run's confidence against
correctness. With a few dozen questions the AUROC is noisy (a bootstrap 95 %
interval is printed); the savings are not.

Run: ``.venv/bin/python benchmarks/adaptive_sampling.py [--limit 40] [--margin 0.25]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import NQ_OPEN_DEV, auroc_cell
from uq_guard_hf import HuggingFaceChatModel

from uq_guard import Guard, GuardConfig
from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.correctness import assess_answer
from uq_guard.evaluation.records import load_questions

BUDGET = {"n_perturbations": 4, "n_samples": 4, "max_tokens": 24, "seed": 0}
REPLY_MAX_TOKENS = 32  # the greedy reply; NQ answers are a phrase or a sentence


@dataclass
class Run:
    """One mode's measurements, one entry per question."""

    samples: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)


async def measure(
    data: Path, limit: int, margin: float | None
) -> tuple[dict[str, Run], list[bool]]:
    model = HuggingFaceChatModel.default(seed=0, max_new_tokens=REPLY_MAX_TOKENS)
    model.invoke("warm-up")
    embedder = shared_embedder()
    configs = {"off": GuardConfig(**BUDGET), "on": GuardConfig(**BUDGET, adaptive=True)}
    if margin is not None:
        configs[f"on+margin {margin}"] = GuardConfig(
            **BUDGET, adaptive=True, adaptive_margin=margin
        )
    guards = {mode: Guard(model, config, embedder=embedder) for mode, config in configs.items()}
    modes = list(guards)
    runs = {mode: Run() for mode in guards}
    correct: list[bool] = []
    for index, item in enumerate(load_questions(data, limit)):
        question = item.question + "?"
        order = modes[index % len(modes) :] + modes[: index % len(modes)]
        replies = {}
        for mode in order:
            started = time.perf_counter()
            result = await guards[mode].arun(question)
            elapsed = time.perf_counter() - started
            report, run = result.report, runs[mode]
            run.samples.append(report.n_samples_requested)
            run.requests.append(report.cost.model_calls)
            run.seconds.append(elapsed)
            run.stopped.append(report.adaptive_stopped_early)
            # no estimate (every sample failed) is NaN here, left out of the AUROC
            run.confidence.append(float("nan") if report.confidence is None else report.confidence)
            replies[mode] = result.reply.texts[0]
        if len(set(replies.values())) > 1:
            print(f"note: the greedy replies differ on question {index}")
        correct.append(assess_answer(replies["off"], item.gold, question=question).correct)
        shown = " ".join(
            f"{mode}: conf={run.confidence[-1]:.3f} n={run.samples[-1]}"
            for mode, run in runs.items()
        )
        print(f"[{index + 1}/{limit}] correct={correct[-1]!s:5} {shown}", flush=True)
    return runs, correct


def print_table(runs: dict[str, Run], correct: list[bool]) -> None:
    off = runs["off"]
    modes = list(runs)
    rows = [
        ("mean samples drawn / question", "samples"),
        ("mean model requests / question", "requests"),
        ("wall seconds / question", "seconds"),
        ("share stopped early", "stopped"),
    ]
    print()
    print(f"{len(correct)} NQ-Open dev questions, SmolLM2-135M-Instruct on CPU, budget {BUDGET}")
    print(f"accuracy of the greedy reply: {statistics.mean(correct):.1%}")
    print()
    print("| measure | " + " | ".join(f"adaptive {mode}" for mode in modes) + " |")
    print("|---|" + "---:|" * len(modes))
    for label, name in rows:
        cells = [statistics.mean(getattr(runs[mode], name)) for mode in modes]
        shown = [f"{c:.1%}" if name == "stopped" else f"{c:.2f}" for c in cells]
        print(f"| {label} | " + " | ".join(shown) + " |")
    aurocs = [auroc_cell(runs[mode].confidence, correct) for mode in modes]
    print("| AUROC (confidence vs correct) | " + " | ".join(aurocs) + " |")
    deltas = [
        statistics.mean(abs(a - b) for a, b in zip(off.confidence, run.confidence, strict=True))
        for run in runs.values()
    ]
    print("| mean abs Δ confidence vs off | " + " | ".join(f"{d:.3f}" for d in deltas) + " |")
    print()
    print(
        "AUROC: bootstrap 95 % interval over questions in brackets; with this few "
        "questions the AUROC is noisy."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=NQ_OPEN_DEV, help="question JSONL (NQ-Open dev)"
    )
    parser.add_argument("--limit", type=int, default=40, help="questions (first N of the file)")
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="also run adaptive sampling with this adaptive_margin (a third mode)",
    )
    args = parser.parse_args()
    runs, correct = asyncio.run(measure(args.data, args.limit, args.margin))
    print_table(runs, correct)


if __name__ == "__main__":
    main()
