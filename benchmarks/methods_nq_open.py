"""Every uncertainty method side by side on NQ-Open dev and on an easier countries set.

Runs the eval runner (``uq_guard.evaluation.runner``) with SmolLM2-135M-Instruct
(or any ``--model`` the CLI takes) and writes, per question set,
``benchmarks/results/<set>/records.jsonl`` plus ``report.md``/``report.html``
and the PNG plots. Interrupted runs resume where they stopped.

    .venv/bin/python benchmarks/methods_nq_open.py --sets nq countries --limit 500

``--compare-perturbations`` runs the same questions under GAAP, model
paraphrase and no perturbation, in ``benchmarks/results/<set>/perturbation/<kind>``,
and prints an AUROC table. The paraphrase and no-perturbation runs take the
greedy reply and the samples of the unperturbed question from the GAAP run's
records (they do not depend on the perturbation), so they cost less and the
baselines that read only those samples are identical across the three.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from _common import NQ_OPEN_DEV

from uq_guard import ConfigurationError, GuardConfig
from uq_guard.backend import Backend
from uq_guard.cli_settings import apply_settings, parse_settings
from uq_guard.evaluation.records import load_questions
from uq_guard.evaluation.report import GUARD_CONFIDENCE, method_rows, write_report
from uq_guard.evaluation.runner import add_verbalized, make_backend, run_eval

ROOT = Path(__file__).resolve().parent
COUNTRIES = ROOT / "datasets" / "countries.jsonl"
PERTURBATIONS = ("gaap", "paraphrase", "none")
COMPARED = (GUARD_CONFIDENCE, "inv_entropy", "max_output_mass", "degree", "gnll")


def data_path(name: str, nq_path: Path) -> Path:
    if name == "nq":
        return nq_path
    if not COUNTRIES.exists():
        sys.path.insert(0, str(ROOT / "datasets"))
        from countries import write_questions

        write_questions(COUNTRIES)
    return COUNTRIES


def add_run_arguments(parser: argparse.ArgumentParser, *, sets: str, limit: int) -> None:
    """The options every question-set benchmark shares: sets, model, budget, paths."""
    parser.add_argument("--sets", nargs="+", choices=("nq", "countries"), default=[sets])
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--model", default="local")
    parser.add_argument("--n-perturbations", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nq-path", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument("--out-root", type=Path, default=ROOT / "results")


def config_and_backend(args: argparse.Namespace) -> tuple[GuardConfig, Backend]:
    """The guard budget of the run and its model, from :func:`add_run_arguments`' options."""
    config = GuardConfig(
        n_perturbations=args.n_perturbations,
        n_samples=args.n_samples,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    return config, make_backend(args.model, max_tokens=args.max_tokens, seed=args.seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, sets="nq", limit=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--time-budget", type=float, help="stop starting sets after N seconds")
    parser.add_argument("--compare-perturbations", action="store_true")
    parser.add_argument(
        "--adaptive",
        action="store_true",
        help="also run with adaptive sampling on (in <set>/adaptive) and compare",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also run with these GuardConfig settings (in <set>/<KEY=VALUE,...>) and compare; "
        "repeatable, e.g. --also gaap_min_fidelity=0.75",
    )
    parser.add_argument(
        "--verbalized",
        action="store_true",
        help="add the verbalized confidence (one more call a question) to the GAAP run's records",
    )
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    config, backend = config_and_backend(args)
    started = time.perf_counter()
    for name in args.sets:
        if args.time_budget and time.perf_counter() - started > args.time_budget:
            print(f"time budget spent: {name} not run")
            continue
        items = load_questions(data_path(name, args.nq_path), args.limit)
        results = {}
        for label, overrides, out in variants(args, args.out_root / name):
            base = results.get("gaap") if label != "gaap" else None
            run = run_eval(
                items,
                backend,
                GuardConfig.build(config, **overrides),
                out_dir=out,
                model_name=args.model,
                reuse={r.id: r for r in base} if base else None,
            )
            records = run.records
            if args.verbalized and label == "gaap":
                by_id = {r.id: r for r in add_verbalized(run.records_path, backend)}
                records = [by_id[r.id] for r in records]
            results[label] = records
            write_report(
                records,
                out,
                title=f"Uncertainty methods on {name} ({len(run.records)} questions, "
                + ", ".join(f"{k}={v}" for k, v in overrides.items())
                + ")",
                command=command,
                n_resamples=args.bootstrap,
                seed=args.seed,
            )
            print(f"{name}/{label}: {len(records)} questions -> {out / 'report.md'}")
        if len(results) > 1:
            print_comparison(name, results, args.bootstrap, args.seed)
    return 0


def variants(args: argparse.Namespace, out: Path) -> list[tuple[str, dict, Path]]:
    """The runs of one question set: (label, GuardConfig overrides, folder), GAAP first.

    Every later run takes the greedy reply and the x_0 samples it can from the
    GAAP run's records (see ``ReplayBackend``): they do not depend on the
    perturbation, and adaptive sampling's first round is a prefix of them.
    """
    if args.compare_perturbations:
        return [
            (kind, {"perturbation": kind}, out / "perturbation" / kind) for kind in PERTURBATIONS
        ]
    extra = [(spec, parse_overrides(spec)) for spec in args.also]
    if args.adaptive:  # shorthand for --also adaptive=true, in <set>/adaptive
        extra.insert(0, ("adaptive", {"adaptive": True}))
    gaap = {"perturbation": "gaap"}
    return [("gaap", gaap, out)] + [(label, {**gaap, **o}, out / label) for label, o in extra]


def parse_overrides(spec: str) -> dict[str, object]:
    """``"gaap_min_fidelity=0.75,adaptive=true"`` -> GuardConfig overrides (JSON, else text).

    Read as ``uq-guard eval --set`` reads its pairs (:mod:`uq_guard.cli_settings`).
    """
    try:
        overrides = parse_settings(spec.split(","), option="--also")
        apply_settings(None, overrides, option="--also")  # a bad value fails before any call
    except ConfigurationError as exc:
        raise SystemExit(f"--also {spec!r}: {exc}") from None
    return overrides


def print_comparison(name: str, results: dict, n_resamples: int, seed: int) -> None:
    """AUROC of the main scores in each run, one row per score, then what each run cost."""
    aurocs: dict[str, dict[str, str]] = {}
    for label, records in results.items():
        for row in method_rows(records, n_resamples=n_resamples, seed=seed):
            interval = row.summary.metrics.get("auroc")
            cell = "undefined" if interval is None else str(interval)
            aurocs.setdefault(row.method, {})[label] = cell
    print(f"\nAUROC on {name} by run")
    print("| method | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for method in COMPARED:
        if method in aurocs:
            cells = [aurocs[method].get(label, "-") for label in results]
            print(f"| {method} | " + " | ".join(cells) + " |")
    for measure, cells in cost_rows(results).items():
        print(f"| {measure} | " + " | ".join(cells) + " |")


def cost_rows(results: dict) -> dict[str, list[str]]:
    """Per run: model requests, sampled answers and seconds per question; early-stop share."""

    def mean(values: list[float]) -> float:
        return sum(values) / max(1, len(values))

    rows: dict[str, list[str]] = {}
    for records in results.values():
        done = [r for r in records if r.ok]
        stats = [r.sampling_stats for r in done]
        measures = {
            "requests / question": mean([r.model_calls + r.reused_requests for r in done]),
            "answers sampled / question": mean([s.get("n_samples_requested", 0) for s in stats]),
            "seconds / question": mean([r.seconds for r in done]),
            "stopped early": mean([float(bool(s.get("adaptive_stopped_early"))) for s in stats]),
        }
        for measure, value in measures.items():
            rows.setdefault(measure, []).append(f"{value:.2f}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
