"""PNG plots of an eval run (matplotlib, Agg backend: no display needed).

* ``reliability.png``: observed accuracy against confidence in 15 equal-mass
  bins, for the guard's own confidence and every score already in [0, 1], and
  for the best method after its cross-fitted isotonic map.
* ``risk_coverage.png``: error rate among answered questions against the
  share answered, for the best methods by AUROC.
* ``histograms.png``: each top method's raw score, right and wrong answers apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uq_guard._exceptions import MissingDependencyError
from uq_guard.evaluation.methods import (
    GUARD_CONFIDENCE,
    LABEL_FREE_CONFIDENCE,
    MethodRow,
    method_signal,
)
from uq_guard.evaluation.metrics import ECE_BINS, cross_fitted_isotonic, risk_coverage_curve
from uq_guard.evaluation.records import EvalRecord
from uq_guard.report import CONFIDENCE_LIKE_SCORES

__all__ = ["draw_plots"]

TOP_METHODS = 5


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("the report's plots", "eval") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bins(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(conf, kind="stable")
    chunks = [c for c in np.array_split(order, min(ECE_BINS, conf.size)) if c.size]
    return (
        np.array([conf[c].mean() for c in chunks]),
        np.array([correct[c].mean() for c in chunks]),
    )


def draw_plots(
    records: Sequence[EvalRecord], rows: Sequence[MethodRow], out_dir: Path
) -> dict[str, Path]:
    """Draw the three plots for ``rows`` (best first) into ``out_dir``; their paths by name.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    plt = _pyplot()
    top = [row for row in rows if "auroc" in row.summary.metrics][:TOP_METHODS] or list(
        rows[:TOP_METHODS]
    )
    paths: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for row in rows:
        conf, correct = method_signal(records, row.method)
        if conf.size and conf.min() >= 0.0 and conf.max() <= 1.0:
            x, y = _bins(conf, correct.astype(float))
            ax.plot(x, y, marker="o", label=f"{row.method} (raw)")
    if top and "brier" in top[0].summary.metrics:
        conf, correct = method_signal(records, top[0].method)
        prob = cross_fitted_isotonic(conf, correct)
        x, y = _bins(prob, correct.astype(float))
        ax.plot(x, y, marker="s", label=f"{top[0].method} (isotonic, cross-fitted)")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Reliability ({ECE_BINS} equal-mass bins)")
    ax.legend(fontsize=7)
    paths["reliability"] = _save(fig, plt, out_dir / "reliability.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in top:
        conf, correct = method_signal(records, row.method)
        curve = risk_coverage_curve(conf, correct)
        ax.plot(curve.coverage, curve.risk, label=row.method)
    if top:
        base = 1.0 - float(np.mean(method_signal(records, top[0].method)[1]))
        ax.axhline(base, color="grey", linestyle=":", label="answer all")
    ax.set(xlabel="coverage (share answered)", ylabel="risk (error rate among answered)")
    ax.set_title("Risk-coverage, top methods by AUROC")
    ax.legend(fontsize=7)
    paths["risk_coverage"] = _save(fig, plt, out_dir / "risk_coverage.png")

    n = max(1, len(top))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
    for ax, row in zip(axes[0], top, strict=False):
        conf, correct = method_signal(records, row.method)
        raw = (
            conf
            if row.method in CONFIDENCE_LIKE_SCORES | {GUARD_CONFIDENCE, LABEL_FREE_CONFIDENCE}
            else -conf
        )
        edges = np.histogram_bin_edges(raw, bins=20)
        ax.hist(raw[correct], bins=edges, alpha=0.6, label="correct", color="tab:green")
        ax.hist(raw[~correct], bins=edges, alpha=0.6, label="incorrect", color="tab:red")
        ax.set_title(row.method, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Scores by correctness", fontsize=10)
    paths["histograms"] = _save(fig, plt, out_dir / "histograms.png")
    return paths


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
