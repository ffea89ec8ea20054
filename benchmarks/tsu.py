"""TSU: does each uncertainty method rise with the sampling temperature? (label-free)

Runs the same questions with SmolLM2-135M-Instruct (or any ``--model`` the CLI
takes) at every temperature of the grid (default T in {0.3, 0.7, 1.0, 1.4},
as in the Inv-Entropy paper), then prints, for Inv-Entropy and every baseline,
the share of questions whose uncertainty rises strictly at every step (the
chain) and at each adjacent step. Writes ``tsu.md`` and ``tsu.json`` next to
the runs, in ``benchmarks/results/<set>/temperature/``.

The run at the methods benchmark's own temperature (0.7) is the folder
``benchmarks/methods_nq_open.py`` writes (``benchmarks/results/<set>``), so
its questions are not asked again; the greedy reply, which no temperature
changes, is reused at every other temperature. Interrupted runs resume.

    .venv/bin/python benchmarks/tsu.py --sets countries --limit 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from methods_nq_open import NQ_OPEN, data_path

from uq_guard import GuardConfig
from uq_guard.evaluation.records import load_questions
from uq_guard.evaluation.report import WHITEBOX_SCORES, tsu_by_method
from uq_guard.evaluation.runner import make_backend, run_eval

ROOT = Path(__file__).resolve().parent
GRID = (0.3, 0.7, 1.0, 1.4)
# scores that read nothing the temperature changes: they tie at every step, so their TSU is 0
CONSTANT_IN_T = {
    **{name: " (greedy reply only: constant in T)" for name in WHITEBOX_SCORES},
    "prompt_semantic_volume": " (prompts only: constant in T)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=("nq", "countries"), default=["countries"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(GRID))
    parser.add_argument("--model", default="local")
    parser.add_argument("--n-perturbations", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nq-path", type=Path, default=NQ_OPEN)
    parser.add_argument("--out-root", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    base = GuardConfig(
        n_perturbations=args.n_perturbations,
        n_samples=args.n_samples,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    backend = make_backend(args.model, max_tokens=args.max_tokens, seed=args.seed)
    for name in args.sets:
        items = load_questions(data_path(name, args.nq_path), args.limit)
        out = args.out_root / name / "temperature"
        runs, seconds, reply_records = {}, {}, None
        # the base temperature first: its run supplies the greedy reply to the others
        for temperature in sorted(args.temperatures, key=lambda t: t != base.temperature):
            folder = args.out_root / name
            if temperature != base.temperature:
                folder = out / f"T{temperature:g}"
            started = time.perf_counter()
            run = run_eval(
                items,
                backend,
                GuardConfig.build(base, temperature=temperature),
                out_dir=folder,
                model_name=args.model,
                reuse=reply_records,
            )
            seconds[temperature] = time.perf_counter() - started
            runs[temperature] = run.records
            reply_records = reply_records or {r.id: r for r in run.records}
            print(f"{name} T={temperature:g}: {len(run.records)} questions in {folder}")
        results = tsu_by_method(runs)
        table = tsu_table(name, results, len(items))
        print(table)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tsu.md").write_text(table + "\n", encoding="utf-8")
        payload = {method: result.as_dict() for method, result in results.items()}
        (out / "tsu.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def tsu_table(name: str, results: dict, n_questions: int) -> str:
    """Markdown: one row per method, the chain share then each adjacent step's share."""
    temps = next(iter(results.values())).temperatures
    steps = [f"{a:g}→{b:g}" for a, b in itertools.pairwise(temps)]
    lines = [
        f"TSU on {name} ({n_questions} questions, T in {', '.join(f'{t:g}' for t in temps)})",
        "",
        "| method | chain (all steps rise) | " + " | ".join(steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for method, result in results.items():
        pairs = [result.pairs[step] for step in itertools.pairwise(temps)]
        note = CONSTANT_IN_T.get(method, "")
        cells = [f"{result.chain:.3f} ({result.n_chain}/{result.n_questions})"]
        cells += [f"{share:.3f}" for share in pairs]
        lines.append(f"| {method}{note} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
