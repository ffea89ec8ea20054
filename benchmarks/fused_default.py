"""The guard's calibrated default for SmolLM2: a fused score, measured held out on each set.

Takes eval runs of the default guard (``uq-guard eval`` folders, e.g.
``benchmarks/results/default/countries`` and ``.../nq``), rescores their
records from the stored texts under the guard's current default scoring
settings (no model call; this adds scores newer than the run and rewrites
``records.jsonl`` and the report), pools them, and fits the fused calibrator of
:mod:`uq_guard.evaluation.fusion` cross-fitted (5 stratified folds). It prints,
for each set:

* the fused P(correct)'s AUROC, held out, with a 95 % bootstrap interval,
  against the best single score's on the same questions;
* its ECE and smooth ECE;
* the share of wrong and of right replies it abstains on at 0.5 and at the
  shipped threshold, the pooled base rate (the share of right answers: below
  it the scores make a wrong answer more likely than before looking; see
  ``Calibrator.base_rate``).

The shipped file is made from the same records with the same fit:
``uq-guard calibrate --fuse --records A --records B --out FILE`` (the command
also stores the runs' settings as ``fitted_with``).

    .venv/bin/python benchmarks/fused_default.py benchmarks/results/default/countries \\
        benchmarks/results/default/nq --out benchmarks/results/default/fused.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import auroc_cell, emit

from uq_guard import GuardConfig
from uq_guard.calibration import Calibrator
from uq_guard.evaluation.fusion import evaluate_fused, fit_fused
from uq_guard.evaluation.fusion_features import ANSWER_SCORES
from uq_guard.evaluation.metrics import (
    abstention_shares,
    auroc,
    class_balance_warning,
    ece,
    smooth_ece,
)
from uq_guard.evaluation.records import label_free_confidence, read_records, write_records
from uq_guard.evaluation.report import method_signal, write_report
from uq_guard.evaluation.runner import rescore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="eval run folders")
    parser.add_argument(
        "--threshold", type=float, help="the shipped threshold (default: the pooled base rate)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--features", help="comma-separated scores to fuse (default: the calibrator's own choice)"
    )
    parser.add_argument(
        "--held-out",
        type=Path,
        nargs="*",
        default=[],
        help="eval runs of other question types: the calibrator fitted on RUNS is applied to them",
    )
    parser.add_argument("--no-rescore", action="store_true", help="use the records as they are")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()

    by_set = {run.name: _records(run, args.no_rescore) for run in args.runs}
    pooled = [r for records in by_set.values() for r in records]
    features = args.features.split(",") if args.features else None
    fused = evaluate_fused(pooled, features=features, n_resamples=0)
    base_rate = float(np.mean(fused.correct))
    shipped = args.threshold if args.threshold is not None else base_rate
    lines = [
        f"Fused P(correct), cross-fitted (5 folds) over {len(pooled)} questions of "
        f"{', '.join(by_set)}; features: {', '.join(fused.features)}.",
        "",
        f"Shipped threshold {shipped:.3f} (pooled base rate {base_rate:.3f}).",
        "",
        "| set | right / wrong | fused AUROC | best single score (AUROC) | ECE | smooth ECE | "
        f"abstains at {shipped:.3f}: wrong / right | abstains at 0.5: wrong / right |",
        "|---|---|---|---|---|---|---|---|",
    ]
    start = 0
    warnings = []
    for name, records in by_set.items():
        part = slice(start, start + len(records))
        start += len(records)
        probability, correct = fused.probability[part], fused.correct[part].astype(bool)
        known = np.isfinite(probability)
        probability, correct = probability[known], correct[known]
        singles = {}
        for feature in sorted(set(fused.features) | ANSWER_SCORES | {"inv_entropy_confidence"}):
            confidence, labels = method_signal(records, feature)
            if 0 < len(confidence) == len(records) and 0 < labels.sum() < len(labels):
                singles[feature] = (auroc(confidence, labels), confidence, labels)
        best = max(singles, key=lambda k: singles[k][0])
        _, best_confidence, best_labels = singles[best]
        abstained = [abstention_shares(probability, correct, t) for t in (shipped, 0.5)]
        lines.append(
            f"| {name} | {int(correct.sum())} / {int((~correct).sum())} | "
            f"{auroc_cell(probability, correct, args.bootstrap)} | {best} "
            f"{auroc_cell(best_confidence, best_labels, args.bootstrap)} | "
            f"{ece(probability, correct):.3f} | {smooth_ece(probability, correct):.3f} | "
            + " | ".join(f"{wrong:.1%} / {right:.1%}" for wrong, right in abstained)
            + " |"
        )
        warning = class_balance_warning(int(correct.sum()), len(correct))
        if warning:
            warnings.append(f"- {name}: {warning}")
    if args.held_out:
        lines += _held_out_lines(pooled, features, args, shipped)
    if warnings:
        lines += ["", "Warnings:", *warnings]
    emit(lines, args.out)
    return 0


def _records(run: Path, as_they_are: bool, calibrator: Calibrator | None = None) -> list:
    """A run's answered records, rescored under the default settings unless ``as_they_are``.

    With a calibrator, their confidence becomes its P(correct), as the guard reports it.
    """
    records = [r for r in read_records(run / "records.jsonl") if r.ok]
    if not as_they_are:
        records = rescore(records, similarity=GuardConfig().similarity, calibrator=calibrator)
        write_records(run / "records.jsonl", records)
        command = " ".join(["benchmarks/fused_default.py", *sys.argv[1:]])
        write_report(records, run, title=f"{run.name}, default guard", command=command, plots=False)
    return records


def _held_out_lines(
    pooled: list, features: list[str] | None, args: argparse.Namespace, shipped: float
) -> list[str]:
    """The calibrator fitted on every pooled record, applied to each held-out run."""
    calibrator = fit_fused(pooled, features=features)
    lines = [
        "",
        "Fitted on all of the above, applied to question types it never saw:",
        "",
        "| held-out set | right / wrong | P(correct) AUROC | label-free confidence AUROC | "
        f"abstains at {shipped:.3f}: wrong / right |",
        "|---|---|---|---|---|",
    ]
    for run in args.held_out:
        records = _records(run, False, calibrator)  # small: always rescored, calibrator applied
        probability = np.array(
            [
                calibrator.calibrate(
                    r.scores, confidence=label_free_confidence(r), method=r.method
                ).probability
                for r in records
            ],
            dtype=float,
        )
        correct = np.array([bool(r.correct) for r in records])
        label_free = np.array([label_free_confidence(r) for r in records], dtype=float)
        wrong, right = abstention_shares(probability, correct, shipped)
        lines.append(
            f"| {run.name} | {int(correct.sum())} / {int((~correct).sum())} | "
            f"{auroc_cell(probability, correct, args.bootstrap)} | "
            f"{auroc_cell(label_free, correct, args.bootstrap)} | {wrong:.1%} / {right:.1%} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
