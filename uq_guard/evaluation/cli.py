"""``uq-guard eval`` and ``uq-guard calibrate``: the command-line side of the eval runner.

This module prints (it is the CLI); the library parts it calls do not.

::

    uq-guard eval --data nq_open_dev.jsonl --model local --out runs/nq --limit 100 \\
        --n-perturbations 4 --n-samples 3 --max-tokens 24
    uq-guard calibrate --records runs/nq/records.jsonl --score guard_confidence \\
        --method isotonic --alpha 0.2 --delta 0.1 --out calib.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from uq_guard._exceptions import ConfigurationError

__all__ = [
    "add_calibrate_arguments",
    "add_eval_arguments",
    "run_calibrate_command",
    "run_eval_command",
]


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uq-guard eval``."""
    parser.add_argument("--data", required=True, help='JSONL of {"question", "answer": [...]}')
    parser.add_argument(
        "--model",
        default="local",
        help="'local' (SmolLM2-135M-Instruct), 'openai:URL[#model]', or 'py:module:attr'",
    )
    parser.add_argument("--out", required=True, help="folder for records.jsonl and the report")
    parser.add_argument("--limit", type=int, help="first N questions only")
    parser.add_argument("--n-perturbations", type=int, default=4, help="perturbed prompts m")
    parser.add_argument("--n-samples", type=int, default=3, help="answers per prompt")
    parser.add_argument(
        "--perturbation", choices=("gaap", "paraphrase", "gaap+paraphrase", "none"), default="gaap"
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="cap on reply and samples")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        metavar="T",
        help="run at each temperature (in --out/T<t>) and report TSU, e.g. 0.3 0.7 1.0 1.4",
    )
    parser.add_argument(
        "--adaptive", action="store_true", help="adaptive sampling (stop early on agreement)"
    )
    parser.add_argument(
        "--verbalized",
        action="store_true",
        help="also ask the model how sure it is (one more call a question)",
    )
    parser.add_argument(
        "--judge",
        metavar="MODEL",
        help="a grader model (same forms as --model) asked yes/no when neither exact match "
        "nor containment matched; the records say which rule decided",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, help="questions in flight (default: 1 local, 4)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of each interval")
    parser.add_argument("--title", help="the report's heading")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uq-guard calibrate``."""
    parser.add_argument("--records", required=True, help="records.jsonl of an eval run")
    parser.add_argument(
        "--score",
        default="guard_confidence",
        help="guard_confidence (what the guard reports; default) or a score name",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="fit on the raw score (uncertainty negated), not the guard's label-free confidence; "
        "implied for a score that is not the guard's own method (e.g. gnll)",
    )
    parser.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    parser.add_argument("--alpha", type=float, default=0.1, help="target answered error rate")
    parser.add_argument("--delta", type=float, default=0.1, help="allowed failure probability")
    parser.add_argument("--out", required=True, help="calibration JSON to write")


def run_eval_command(args: argparse.Namespace) -> int:
    """Run ``uq-guard eval``; returns the exit status."""
    from uq_guard.config import GuardConfig
    from uq_guard.evaluation.judge import ModelJudge
    from uq_guard.evaluation.records import load_questions
    from uq_guard.evaluation.report import tsu_by_method, write_report, write_tsu
    from uq_guard.evaluation.runner import (
        make_backend,
        run_eval,
        run_temperatures,
        temperature_folder,
    )

    items = load_questions(args.data, args.limit)
    config = GuardConfig(
        n_perturbations=args.n_perturbations,
        n_samples=args.n_samples,
        perturbation=args.perturbation,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        adaptive=args.adaptive,
        verbalized_confidence=args.verbalized,
    )
    local = args.model == "local"
    concurrency = args.concurrency or (1 if local else 4)
    backend = make_backend(
        args.model,
        max_tokens=args.max_tokens,
        seed=args.seed,
        max_concurrency=config.max_concurrency,
        timeout_s=config.timeout_s,
    )
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:
            print("no progress bar: pip install 'uq-guard[eval]'", file=sys.stderr)
        else:
            total = len(items) * max(1, len(args.temperatures or ()))
            bar = tqdm(total=total, desc="eval", unit="q", dynamic_ncols=True)

    def on_record(record) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(correct=int(record.correct), calls=record.model_calls)

    folders = {t: temperature_folder(args.out, t) for t in args.temperatures or ()}
    if bar is not None:
        from uq_guard.evaluation.records import read_records

        for folder in folders.values() or [Path(args.out)]:
            already = {r.id for r in read_records(folder / "records.jsonl") if r.ok}
            bar.update(sum(1 for item in items if item.id in already))
    judge = ModelJudge(make_backend(args.judge, max_tokens=8)) if args.judge else None
    options = {
        "model_name": args.model,
        "concurrency": concurrency,
        "on_record": on_record,
        "judge": judge,
    }
    try:
        if folders:
            runs = run_temperatures(
                items, backend, config, list(folders), out_dir=args.out, **options
            )
        else:
            run = run_eval(items, backend, config, out_dir=args.out, **options)
            runs = {config.temperature: run}
    finally:
        if bar is not None:
            bar.close()
    command = "uq-guard " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not sys.argv[1:] or sys.argv[1] != "eval":
        command = _reconstruct(args)
    title = args.title or f"uq_guard eval: {Path(args.data).name} with {args.model}"
    for temperature, run in runs.items():
        paths = write_report(
            run.records,
            folders.get(temperature, args.out),
            title=f"{title} (T={temperature:g})" if folders else title,
            command=command,
            n_resamples=args.bootstrap,
            seed=args.seed,
            plots=not args.no_plots,
        )
        print(
            f"{len(run.records)} questions ({run.n_new} new, {run.n_resumed} resumed, "
            f"{run.n_failed} failed) -> {run.records_path}"
        )
        if not folders:
            print(_table_of(paths["markdown"]))
        print(f"report: {paths['markdown']} and {paths['html']}")
    if judge is not None:
        print(
            f"judge {args.judge}: {judge.n_asked} asked, "
            f"{judge.n_unreadable} said neither yes nor no"
        )
    if folders:
        results = tsu_by_method({t: run.records for t, run in runs.items()})
        path = write_tsu(results, args.out, title=f"TSU: {Path(args.data).name} with {args.model}")
        print(path.read_text(encoding="utf-8"), end="")
        print(f"TSU: {path}")
    return 0


def _reconstruct(args: argparse.Namespace) -> str:
    parts = ["uq-guard eval"]
    for key, value in sorted(vars(args).items()):
        if key in ("run", "command", "verbose") or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        parts.append(
            flag if value is True else " ".join([flag, *(shlex.quote(str(v)) for v in values)])
        )
    return " ".join(parts)


def _table_of(markdown: Path) -> str:
    lines = markdown.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))


def run_calibrate_command(args: argparse.Namespace) -> int:
    """Run ``uq-guard calibrate``; returns the exit status."""
    from uq_guard.calibration import fit_calibrator, risk_controlled_threshold
    from uq_guard.evaluation.records import latest_records, read_records
    from uq_guard.evaluation.report import GUARD_CONFIDENCE, method_signal

    records = [r for r in latest_records(read_records(args.records)).values() if r.ok]
    if not records:
        raise ConfigurationError(f"{args.records} holds no answered question")
    methods = Counter(r.method for r in records if r.confidence is not None)
    score = args.score
    if score == GUARD_CONFIDENCE or (score in methods and not args.raw):
        # the guard calibrates its own confidence; fit on exactly that scale
        chosen = [r for r in records if score == GUARD_CONFIDENCE or r.method == score]
        conf, correct = method_signal(chosen, GUARD_CONFIDENCE)
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
    path = calibrator.with_risk_control(control).save(args.out)
    print(
        f"{args.method} calibrator of {method!r} fitted on {conf.size} questions "
        f"({int(np.sum(correct))} correct) -> {path}"
    )
    if control.feasible:
        print(
            f"risk-controlled threshold {control.threshold:.4f}: coverage {control.coverage:.3f} "
            f"({control.n_answered} of {control.n} answered), answered error rate "
            f"{control.error_rate:.3f} <= bound {control.error_upper_bound:.3f} "
            f"(alpha={args.alpha:g}, delta={args.delta:g})"
        )
    else:
        print(f"coverage 0: {control.reason}")
    return 0
