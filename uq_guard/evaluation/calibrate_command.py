"""``uq-guard calibrate``: fit a calibrator and a risk-controlled threshold from eval records.

This module prints (it is the CLI); the library parts it calls do not.

::

    uq-guard calibrate --records runs/nq/records.jsonl --score guard_confidence \\
        --method isotonic --alpha 0.2 --delta 0.1 --out calib.json
    uq-guard calibrate --records runs/nq/records.jsonl --records runs/countries/records.jsonl \\
        --fuse --out calib.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import FITTED_WITH_KEYS
from uq_guard.config_sections import ScoringSettings

__all__ = ["add_calibrate_arguments", "run_calibrate_command"]


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uq-guard calibrate``."""
    parser.add_argument(
        "--records",
        required=True,
        action="append",
        help="records.jsonl of an eval run; repeat to pool several runs (data sets)",
    )
    parser.add_argument(
        "--score",
        help="guard_confidence (what the guard reports; default) or a score name",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="fit on the raw score (uncertainty negated), not the guard's label-free confidence; "
        "implied for a score that is not the guard's own method (e.g. gnll)",
    )
    parser.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="fit a logistic regression over several scores (cross-fitted; prints held-out "
        "AUROC, ECE and each score's own AUROC)",
    )
    parser.add_argument(
        "--features",
        help="with --fuse: comma-separated scores to fuse (default: every score present in 95%% "
        "of the records; guard_confidence = the label-free confidence)",
    )
    parser.add_argument(
        "--C",
        type=float,
        dest="C",
        help="with --fuse: fixed inverse L2 strength (default: chosen by inner cross-validation)",
    )
    parser.add_argument(
        "--recalibration",
        choices=("auto", "none", "platt", "isotonic"),
        default="auto",
        help="with --fuse: map of the fused logit (auto: only if it lowers held-out smooth ECE)",
    )
    parser.add_argument("--folds", type=int, default=5, help="with --fuse: cross-fitting folds")
    parser.add_argument("--seed", type=int, default=0, help="with --fuse: folds and bootstrap seed")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="with --fuse: resamples of each interval"
    )
    parser.add_argument("--alpha", type=float, default=0.1, help="target answered error rate")
    parser.add_argument("--delta", type=float, default=0.1, help="allowed failure probability")
    parser.add_argument("--out", required=True, help="calibration JSON to write")


def run_calibrate_command(args: argparse.Namespace) -> int:
    """Run ``uq-guard calibrate``; returns the exit status."""
    from uq_guard.evaluation.calibrators import fit_calibrator, risk_controlled_threshold
    from uq_guard.evaluation.methods import GUARD_CONFIDENCE, LABEL_FREE_CONFIDENCE, method_signal

    records, sizes = _calibration_records(args.records)
    fitted_with = _fitted_with(args.records)
    if fitted_with is not None:
        fitted_with.update(_scored_with(records))
    if args.fuse:
        return _run_fuse(args, records, sizes, fitted_with)
    if args.features:
        raise ConfigurationError("--features needs --fuse")
    methods = Counter(r.method for r in records if r.confidence is not None)
    score = args.score or GUARD_CONFIDENCE
    if score == GUARD_CONFIDENCE or (score in methods and not args.raw):
        # the guard calibrates its own label-free confidence; fit on exactly that scale
        chosen = [r for r in records if score == GUARD_CONFIDENCE or r.method == score]
        conf, correct = method_signal(chosen, LABEL_FREE_CONFIDENCE)
        method = methods.most_common(1)[0][0] if score == GUARD_CONFIDENCE else score
        calibrator = fit_calibrator(conf, correct, args.method, method=method)
    else:
        known = sorted({name for r in records for name in r.scores} | {GUARD_CONFIDENCE})
        if not any(score in r.scores for r in records):
            raise ConfigurationError(f"no score {score!r} in the records; known: {known}")
        conf, correct = method_signal(records, score)
        method = score
        calibrator = fit_calibrator(conf, correct, args.method, score=score)
        print(
            f"note: fitted on the raw {score!r} score; a guard with this file reads that "
            "score from each report, so it must compute it (white-box scores need a backend "
            "that returns log-probabilities)",
            file=sys.stderr,
        )
    control = risk_controlled_threshold(
        calibrator.apply(conf), correct, alpha=args.alpha, delta=args.delta
    )
    calibrator = calibrator.model_copy(update={"fitted_with": fitted_with})
    path = calibrator.with_risk_control(control).save(args.out)
    print(
        f"{args.method} calibrator of {method!r} fitted on {conf.size} questions "
        f"({int(np.sum(correct))} correct) -> {path}"
    )
    _print_base_rate(calibrator, calibrator.apply(conf), correct, "in sample")
    _print_risk_control(control, args)
    return 0


def _calibration_records(paths: Sequence[str] | str) -> tuple[list[Any], list[int]]:
    """The answered records of one or more records files, pooled, and how many each gave.

    Within a file the last line of a question wins.
    """
    from uq_guard.evaluation.records import latest_records, read_records

    pooled, sizes = [], []
    for path in [paths] if isinstance(paths, str) else paths:
        if not Path(path).is_file():
            raise ConfigurationError(f"records file {path} does not exist")
        answered = [r for r in latest_records(read_records(path)).values() if r.ok]
        if not answered:
            raise ConfigurationError(f"{path} holds no answered question")
        pooled.extend(answered)
        sizes.append(len(answered))
    return pooled, sizes


def _fitted_with(paths: Sequence[str] | str) -> dict[str, Any] | None:
    """The guard settings the records were made under, from the run.json beside each file.

    Only :data:`~uq_guard.calibration.FITTED_WITH_KEYS` are kept, and of those
    only the ones every run recorded. None (with a warning) when a records
    file has no readable run.json: a calibration of unknown settings cannot
    tell a guard that its own differ.

    Raises:
        ConfigurationError: two pooled runs were made with different values of
            one of these settings (the file would describe neither).
    """
    from uq_guard.calibration import FITTED_WITH_KEYS
    from uq_guard.evaluation.resume import SETTINGS_FILE, run_settings

    found: list[tuple[str, dict[str, Any]]] = []
    missing: list[str] = []
    for path in [paths] if isinstance(paths, str) else paths:
        settings_path = Path(path).parent / SETTINGS_FILE
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            missing.append(str(settings_path))
            continue
        if not isinstance(settings, dict):
            missing.append(str(settings_path))
            continue
        found.append((str(path), run_settings(settings)))
    if missing:
        print(
            f"warning: no readable {' or '.join(missing)}: the calibration will not record the "
            "guard settings it was fitted under (fitted_with is null), so a guard cannot warn "
            "when its own settings differ",
            file=sys.stderr,
        )
        return None
    fitted_with: dict[str, Any] = {}
    for key in FITTED_WITH_KEYS:
        if not all(key in settings for _, settings in found):
            continue  # a run that did not record it: unknown, so not claimed
        first_path, first = found[0]
        for path, settings in found[1:]:
            if settings[key] != first[key]:
                raise ConfigurationError(
                    f"the records were made with different {key}: {first[key]!r} in "
                    f"{first_path} and {settings[key]!r} in {path}; fit one calibration per "
                    f"setting (a calibration is valid for the {key} it was fitted under)"
                )
        fitted_with[key] = first[key]
    return fitted_with


#: The settings a record's ``scoring`` holds: they describe its scores even after a rescore.
_SCORING_KEYS = tuple(key for key in FITTED_WITH_KEYS if key in ScoringSettings.model_fields)


def _scored_with(records: Sequence[Any]) -> dict[str, Any]:
    """The scoring settings every record was scored with (a rescore changes the run's).

    Raises:
        ConfigurationError: the records were scored with different values of one.
    """
    settings: dict[str, Any] = {}
    for key in _SCORING_KEYS:
        values = {repr(r.scoring[key]): r.scoring[key] for r in records if key in r.scoring}
        if len(values) > 1:
            raise ConfigurationError(
                f"the records were scored with different {key}: {', '.join(values)}; rescore "
                "them alike, or fit one calibration per setting"
            )
        if values and all(key in r.scoring for r in records):
            settings[key] = next(iter(values.values()))
    return settings


def _print_base_rate(
    calibrator: Any, probability: np.ndarray, correct: np.ndarray, where: str
) -> None:
    """The neutral threshold a model shipping this file abstains under, and what it withholds."""
    from uq_guard.evaluation.metrics import abstention_shares

    threshold = calibrator.base_rate
    if threshold is None or probability.size == 0:
        return
    wrong_share, right_share = abstention_shares(probability, correct, threshold)
    print(
        f"base-rate threshold {threshold:.4f} (a shipped model's default, see "
        f"Calibrator.base_rate), {where}: abstains on {wrong_share:.1%} of the wrong answers "
        f"and {right_share:.1%} of the right ones"
    )


def _print_risk_control(control: Any, args: argparse.Namespace) -> None:
    if control.feasible:
        print(
            f"risk-controlled threshold {control.threshold:.4f}: coverage {control.coverage:.3f} "
            f"({control.n_answered} of {control.n} answered), answered error rate "
            f"{control.error_rate:.3f} <= bound {control.error_upper_bound:.3f} "
            f"(alpha={args.alpha:g}, delta={args.delta:g})"
        )
    else:
        print(f"coverage 0: {control.reason}")


#: Fewer right (or wrong) answers than this and the intervals mean little.
_FEW_OF_A_CLASS = 20


def _run_fuse(
    args: argparse.Namespace,
    records: list[Any],
    sizes: list[int],
    fitted_with: dict[str, Any] | None,
) -> int:
    """``uq-guard calibrate --fuse``: fit, print held-out metrics next to each score alone, save."""
    from uq_guard.calibration import FEATURE_GROUPS
    from uq_guard.evaluation.calibrators import risk_controlled_threshold
    from uq_guard.evaluation.fusion import evaluate_fused

    if args.score:
        raise ConfigurationError("--fuse reads several scores: use --features, not --score")
    features = None
    if args.features:
        features = [f.strip() for f in args.features.split(",") if f.strip()]
    result = evaluate_fused(
        records,
        features=features,
        C=args.C,
        n_folds=args.folds,
        seed=args.seed,
        recalibration=args.recalibration,
        n_resamples=args.bootstrap,
    )
    calibrator = result.calibrator.model_copy(update={"fitted_with": fitted_with})
    summary = result.summary
    held = np.isfinite(result.probability)
    control = risk_controlled_threshold(
        result.probability[held], result.correct[held], alpha=args.alpha, delta=args.delta
    )
    path = calibrator.with_risk_control(control).save(args.out)
    n_right = int(result.correct.sum())
    n_wrong = result.correct.size - n_right
    files = f" from {len(args.records)} files" if len(args.records) > 1 else ""
    print(
        f"fused calibrator over {_count(len(result.features), 'score')} fitted on "
        f"{result.correct.size} "
        f"questions{files}: {n_right} right, {n_wrong} wrong -> {path}"
    )
    if min(n_right, n_wrong) < _FEW_OF_A_CLASS:
        few = "right" if n_right < n_wrong else "wrong"
        print(
            f"warning: only {min(n_right, n_wrong)} {few} answers: the intervals below are wide "
            "and the held-out numbers rest on a handful of questions",
            file=sys.stderr,
        )
    assert calibrator.mapping.kind == "fused"
    mapping = calibrator.mapping
    held_out = mapping.held_out
    folds = held_out.n_folds if held_out is not None else args.folds
    level = next(iter(summary.metrics.values())).level if summary.metrics else 0.95
    print(
        f"held out ({folds}-fold cross-fitted, {summary.n} questions, "
        f"{level:.0%} bootstrap intervals):"
    )
    cells = [
        f"{label} {_interval(summary, name)}"
        for name, label in (("auroc", "AUROC"), ("ece", "ECE"), ("smooth_ece", "smooth ECE"))
    ]
    print(f"  {'fused':<24} " + "   ".join(cells))
    print("each score alone (AUROC, on the questions that have it):")
    for name in sorted(result.single, key=lambda n: -_estimate(result.single[n], "auroc")):
        single = result.single[name]
        print(f"  {name:<24} AUROC {_interval(single, 'auroc')}   n={single.n}")
    best = result.best_single
    if best is not None and "auroc" in summary.metrics:
        gap = summary.metrics["auroc"].estimate - best[1]
        print(f"fused - best single ({best[0]}): {gap:+.3f} AUROC")
    if len(sizes) > 1:
        _print_by_file(args, records, sizes, result)
    main = mapping.models[0]
    recalibration = main.recalibration.kind if main.recalibration else "none"
    print(
        f"full model: C={main.C:g}, recalibration {recalibration}, {main.n_fitted} questions"
        f"{_alone(result, main)}"
    )
    for model in mapping.models[1:]:
        dropped = [f for f in main.features if f not in model.features]
        groups = [g for g, names in FEATURE_GROUPS.items() if names & set(dropped)]
        print(
            f"  sub-model without {', '.join(groups) or ', '.join(dropped)}: "
            f"{_count(len(model.features), 'score')}, {model.n_fitted} questions"
            f"{_alone(result, model)}"
        )
    _print_base_rate(calibrator, result.probability[held], result.correct[held], "held out")
    print("risk control on the held-out probabilities:")
    _print_risk_control(control, args)
    return 0


def _print_by_file(
    args: argparse.Namespace, records: list[Any], sizes: list[int], result: Any
) -> None:
    """The pooled model's held-out numbers on each file, next to that file's best single score."""
    from uq_guard._exceptions import UndefinedMetricError
    from uq_guard.evaluation.fusion import fused_data
    from uq_guard.evaluation.metrics import auroc, smooth_ece

    print("each file (held out, pooled model; best single score on that file):")
    start = 0
    for path, size in zip(args.records, sizes, strict=True):
        part = slice(start, start + size)
        start += size
        prob, correct = result.probability[part], result.correct[part]
        held = np.isfinite(prob)
        prob, correct = prob[held], correct[held]
        table = fused_data(records[part], features=result.features).table
        singles = {}
        for index, name in enumerate(result.features):
            present = np.isfinite(table[:, index])
            try:
                singles[name] = auroc(table[present, index], result.correct[part][present])
            except (UndefinedMetricError, ConfigurationError):
                continue
        try:
            fused = f"{auroc(prob, correct):.3f}"
        except UndefinedMetricError:
            fused = "n/a (one class)"
        best = max(singles, key=lambda n: singles[n]) if singles else None
        best_text = f"{best} {singles[best]:.3f}" if best else "none defined"
        print(
            f"  {path}: {int(correct.sum())} right of {correct.size}, fused AUROC {fused}, "
            f"smooth ECE {smooth_ece(prob, correct):.3f}; best single {best_text}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _alone(result: Any, model: Any) -> str:
    """The held-out AUROC of one model of the file used alone, as a suffix."""
    held = result.models.get(tuple(model.features))
    if held is None or held.auroc is None:
        return ""
    return f"; alone, held out: AUROC {held.auroc:.3f}, smooth ECE {held.smooth_ece:.3f}"


def _estimate(summary: Any, metric: str) -> float:
    interval = summary.metrics.get(metric)
    return interval.estimate if interval is not None else float("-inf")


def _interval(summary: Any, metric: str) -> str:
    interval = summary.metrics.get(metric)
    if interval is None:
        return "n/a (" + summary.undefined.get(metric, "undefined") + ")"
    return str(interval)
