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
import sys

from methods_nq_open import add_run_arguments, config_and_backend, data_path

from uq_guard.evaluation.records import load_questions
from uq_guard.evaluation.report import tsu_by_method, write_tsu
from uq_guard.evaluation.runner import run_temperatures

GRID = (0.3, 0.7, 1.0, 1.4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, sets="countries", limit=100)
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(GRID))
    args = parser.parse_args()

    base, backend = config_and_backend(args)
    for name in args.sets:
        items = load_questions(data_path(name, args.nq_path), args.limit)
        out = args.out_root / name / "temperature"
        runs = run_temperatures(
            items,
            backend,
            base,
            args.temperatures,
            out_dir=out,
            folders={base.temperature: args.out_root / name},
            model_name=args.model,
        )
        results = tsu_by_method({t: run.records for t, run in runs.items()})
        path = write_tsu(results, out, title=f"TSU on {name}, {len(items)} questions")
        print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
