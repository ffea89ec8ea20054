"""What the benchmark scripts share: where NQ-Open dev is by default, and one AUROC cell.

Each script takes its data as ``--data PATH``; the default is NQ-Open dev
from ``$UQ_GUARD_NQ_OPEN`` when set, else the ``data`` folder of ``shared``
beside the checkout (where these machines keep it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uq_guard.evaluation.metrics import evaluate

NQ_OPEN_DEV = Path(
    os.environ.get("UQ_GUARD_NQ_OPEN")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "nq_open_dev.jsonl"
)
"""The default question file of the NQ-Open benchmarks (override with ``--data``)."""


def auroc_cell(
    confidence: Sequence[float], correct: Sequence[bool], n_resamples: int = 1000
) -> str:
    """``0.834 [0.781, 0.884]``: AUROC with its 95% bootstrap interval (non-finite values left out).

    ``n/a`` without values, ``undefined (one class only)`` when every answer is
    right or every one is wrong.
    """
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=bool)
    known = np.isfinite(conf)
    if not known.any():
        return "n/a"
    summary = evaluate(
        conf[known], corr[known], n_resamples=n_resamples, seed=0, metrics=("auroc",)
    )
    interval = summary.metrics.get("auroc")
    return str(interval) if interval is not None else "undefined (one class only)"


def emit(lines: Sequence[str], out: Path | None) -> None:
    """Print a benchmark's table, and write it to ``out`` (markdown) when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
