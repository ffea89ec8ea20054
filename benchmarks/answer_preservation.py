"""Does keeping the question rank answers better? Each perturber's Inv-Entropy AUROC.

Compares, on the same questions and with the same replies, the default GAAP
(answer-preserving word edits and meaning-neutral frames) with the published
GAAP (``gaap_edits="paper", gaap_frames=False``) and, optionally, GAAP without
its frames, or the default with more perturbations (``--variants paper words m6
m8``). Each variant is one eval run; every run after the first reuses the
first run's greedy replies and the samples of the unperturbed question (they
do not depend on the perturbation), so the sample-only baselines are the same
in every column and only the perturbed samples are drawn anew.

For every run the table gives the AUROC (95 % bootstrap interval) of
Inv-Entropy, the guard's label-free confidence, the reply-agreement baseline
(the mean similarity of the reply to the question's own samples) and Degree,
and how often a perturbation no longer asks the question (the rule check of
``benchmarks/perturbation.py``; templated sets only).

    .venv/bin/python benchmarks/answer_preservation.py --data countries --limit 400 \\
        --default-run benchmarks/results/default/countries

``--default-run`` names an existing run of the default perturber (made by
``uq-guard eval`` with the same budget): its records are reused, not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from uq_guard import GuardConfig, UndefinedMetricError
from uq_guard.evaluation.methods import LABEL_FREE_CONFIDENCE, confidence_of
from uq_guard.evaluation.metrics import paired_difference_ci
from uq_guard.evaluation.records import EvalRecord, load_questions, read_records
from uq_guard.evaluation.report import GUARD_CONFIDENCE, method_signal
from uq_guard.evaluation.runner import make_backend, run_eval

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import auroc_cell  # noqa: E402
from perturbation import DATA, asks_the_same  # noqa: E402

VARIANTS = {
    "paper": {"gaap_edits": "paper", "gaap_frames": False},
    "words": {"gaap_frames": False},
    "m6": {"n_perturbations": 6},
    "m8": {"n_perturbations": 8},
    "again": {},
    "pairs2": {"gaap_pairs_per_generation": 2},
    "pairs4": {"gaap_pairs_per_generation": 4},
}
SHOWN = ("inv_entropy", GUARD_CONFIDENCE, "reply_agreement", "degree")


def changed_share(records: list[EvalRecord]) -> float:
    """Share of the real perturbations that no longer ask the templated question (NaN: none)."""
    verdicts = [
        asks_the_same(record.question, variant)
        for record in records
        for variant in dict.fromkeys(record.prompts[1 : 1 + (record.n_perturbations_real or 0)])
    ]
    known = [v for v in verdicts if v is not None]
    return 1.0 - float(np.mean(known)) if known else float("nan")


def paired_difference(
    base: list[EvalRecord], other: list[EvalRecord], method: str, n_resamples: int
) -> str:
    """``other``'s AUROC minus ``base``'s on the questions both scored, with a paired
    95% bootstrap interval: ``-0.004 [-0.031, +0.022] (n=400)``.
    """
    theirs = {r.id: confidence_of(r, method) for r in other}
    pairs = [
        (theirs[r.id], mine, bool(r.correct))
        for r in base
        if (mine := confidence_of(r, method)) is not None and theirs.get(r.id) is not None
    ]
    if not pairs:
        return "n/a (no question scored by both)"
    conf, baseline, correct = (np.array(column) for column in zip(*pairs, strict=True))
    try:
        delta = paired_difference_ci(conf, baseline, correct, n_resamples=n_resamples)
    except UndefinedMetricError:
        return "undefined (one class only)"
    return f"{delta.estimate:+.3f} [{delta.low:+.3f}, {delta.high:+.3f}] (n={len(pairs)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default="countries", help=f"{', '.join(sorted(DATA))} or a JSONL path"
    )
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--default-run", type=Path, required=True)
    parser.add_argument("--out-root", type=Path, help="default: beside --default-run")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=["paper"],
        help="runs beside the default: paper = the published GAAP, words = GAAP without "
        "frames, m6 / m8 = the default GAAP with 6 or 8 perturbations, again = the default "
        "GAAP drawn anew by this checkout, pairs2 / pairs4 = the default GAAP with 2 / 4 "
        "crossovers a generation (2 is the default since 2026-12)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--paired-to",
        help="also print every other run's AUROC minus this run's (a variant's name or "
        "'default'), paired over the same questions",
    )
    args = parser.parse_args()

    settings = json.loads((args.default_run / "run.json").read_text())
    items = load_questions(DATA.get(args.data, Path(args.data)), args.limit)
    wanted = {item.id for item in items}
    default = [r for r in read_records(args.default_run / "records.jsonl") if r.id in wanted]
    done = {r.id: r for r in default if r.ok}
    items = [item for item in items if item.id in done]
    config = GuardConfig(
        n_perturbations=settings["n_perturbations"],
        n_samples=settings["n_samples"],
        max_tokens=settings["max_tokens"],
        temperature=settings["temperature"],
        seed=settings["seed"],
    )
    backend = make_backend("local", seed=settings["seed"])
    runs = {"default": [done[item.id] for item in items]}
    out_root = args.out_root or args.default_run.parent / f"{args.default_run.name}-perturbers"
    for name in args.variants:
        run = run_eval(
            items,
            backend,
            GuardConfig.build(config, **VARIANTS[name]),
            out_dir=out_root / name,
            model_name=settings.get("model", "local"),
            reuse=done,
            system=settings.get("system"),
            reply_max_tokens=settings.get("reply_max_tokens"),
        )
        runs[name] = [r for r in run.records if r.ok]

    right = sum(r.correct for r in runs["default"])
    print(f"\n{len(items)} questions of {args.data}: {right} right, {len(items) - right} wrong\n")
    print("| perturber | changed the question | " + " | ".join(SHOWN) + " |")
    print("|---|---|" + "---|" * len(SHOWN))
    for name, records in runs.items():
        cells = [auroc_cell(*method_signal(records, method), args.bootstrap) for method in SHOWN]
        print(f"| {name} | {changed_share(records):.1%} | " + " | ".join(cells) + " |")
    if args.paired_to:
        paired = ("inv_entropy", GUARD_CONFIDENCE, LABEL_FREE_CONFIDENCE)
        print(f"\nAUROC minus {args.paired_to}'s, paired over the same questions:\n")
        print("| perturber | " + " | ".join(paired) + " |")
        print("|---|" + "---|" * len(paired))
        base = runs[args.paired_to]
        for name, records in runs.items():
            if name != args.paired_to:
                cells = [paired_difference(base, records, m, args.bootstrap) for m in paired]
                print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
