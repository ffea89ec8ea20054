"""Every uncertainty method side by side on NQ-Open dev and on an easier countries set.

Runs the eval runner (``uq_guard.evaluation.runner``) with SmolLM2-135M-Instruct
(or any ``--model`` the CLI takes) and writes, per question set,
``benchmarks/results/<set>/records.jsonl`` plus ``report.md``/``report.html``
and the PNG plots. Interrupted runs resume where they stopped.

    .venv/bin/python benchmarks/methods_nq_open.py --sets nq countries --limit 500

``--compare-perturbations`` (issue 3) runs the same questions under GAAP, model
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

from uq_guard import GuardConfig
from uq_guard.evaluation.records import load_questions
from uq_guard.evaluation.report import GUARD_CONFIDENCE, method_rows, write_report
from uq_guard.evaluation.runner import make_backend, run_eval

ROOT = Path(__file__).resolve().parent
NQ_OPEN = ROOT.parent.parent / "shared" / "data" / "nq_open_dev.jsonl"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=("nq", "countries"), default=["nq"])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--model", default="local")
    parser.add_argument("--n-perturbations", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--nq-path", type=Path, default=NQ_OPEN)
    parser.add_argument("--out-root", type=Path, default=ROOT / "results")
    parser.add_argument("--time-budget", type=float, help="stop starting sets after N seconds")
    parser.add_argument("--compare-perturbations", action="store_true")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    config = GuardConfig(
        n_perturbations=args.n_perturbations,
        n_samples=args.n_samples,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    backend = make_backend(args.model, max_tokens=args.max_tokens, seed=args.seed)
    started = time.perf_counter()
    for name in args.sets:
        if args.time_budget and time.perf_counter() - started > args.time_budget:
            print(f"time budget spent: {name} not run")
            continue
        items = load_questions(data_path(name, args.nq_path), args.limit)
        kinds = PERTURBATIONS if args.compare_perturbations else ("gaap",)
        results = {}
        for kind in kinds:
            out = args.out_root / name
            if args.compare_perturbations:
                out = out / "perturbation" / kind
            reuse = (
                {r.id: r for r in results["gaap"]} if kind != "gaap" and "gaap" in results else None
            )
            run = run_eval(
                items,
                backend,
                GuardConfig.build(config, perturbation=kind),
                out_dir=out,
                model_name=args.model,
                reuse=reuse,
            )
            results[kind] = run.records
            write_report(
                run.records,
                out,
                title=f"Uncertainty methods on {name} ({len(run.records)} questions, "
                f"perturbation={kind})",
                command=command,
                n_resamples=args.bootstrap,
                seed=args.seed,
            )
            print(f"{name}/{kind}: {len(run.records)} questions -> {out / 'report.md'}")
        if args.compare_perturbations:
            print_comparison(name, results, args.bootstrap, args.seed)
    return 0


def print_comparison(name: str, results: dict, n_resamples: int, seed: int) -> None:
    """AUROC of the main scores under each perturbation, one row per score."""
    aurocs: dict[str, dict[str, str]] = {}
    for kind, records in results.items():
        for row in method_rows(records, n_resamples=n_resamples, seed=seed):
            interval = row.summary.metrics.get("auroc")
            cell = (
                "undefined"
                if interval is None
                else (f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]")
            )
            aurocs.setdefault(row.method, {})[kind] = cell
    print(f"\nAUROC on {name} by perturbation")
    print("| method | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for method in COMPARED:
        if method in aurocs:
            cells = [aurocs[method].get(kind, "-") for kind in results]
            print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
