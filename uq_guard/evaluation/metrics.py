"""How well a confidence score separates right answers from wrong ones.

Every function takes two equal-length arrays: ``confidence`` (higher = trust
the answer more; pass ``-uncertainty`` for an uncertainty score) and
``correct`` (1/True = right). They are pure: arrays in, numbers out.

Conventions (ALGORITHMS.md §5):

* **Ties** in confidence are broken *in expectation*: where a curve rejects
  part of a group of equal scores, it counts the group's average outcome, as
  if ties were broken uniformly at random. Results never depend on the input
  order.
* **Undefined is an error, never a NaN.** AUROC and PRR need both right and
  wrong answers; on all-correct or all-wrong data they raise
  :class:`~uq_guard.UndefinedMetricError`. Bad input (empty, different
  lengths, NaN or infinite scores, labels other than 0/1) raises
  :class:`~uq_guard.ConfigurationError`. Metrics that *are* defined on one
  class keep their value and say so in their docstring (AURAC, ECE, Brier).
* **Bootstrap intervals** are percentile intervals over resamples of the
  questions, drawn from ``numpy.random.default_rng(seed)`` and computed for
  all resamples at once (no Python loop per resample). Resamples on which the
  metric is undefined (a single class drawn) are left out and counted.
* **Too few of a class.** Every ranking metric's spread is set by the rarer
  class: AUROC's standard error is about ``sqrt(A(1 - A) / n_rare)`` (Hanley
  & McNeil), 0.1 for ``A = 0.7`` and 20 rare answers, so the 95% interval
  spans about ±0.2 and no longer tells a method from chance; below that, a
  percentile bootstrap also draws many resamples with one or two rare
  answers. :func:`class_balance_warning` (and so :func:`evaluate`) warns
  when fewer than :data:`MIN_CLASS_ANSWERS` answers are right, or wrong.

Each metric is computed in :mod:`uq_guard.evaluation.point_metrics` (on the
batched cores of ``_metric_rows``); this module adds the bootstrap
intervals and the one-call summary, and every name is importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError, UndefinedMetricError
from uq_guard.evaluation import _metric_rows as cores
from uq_guard.evaluation._arrays import as_pair
from uq_guard.evaluation.point_metrics import (
    ECE_BINS,
    SMOOTH_ECE_GRID,
    RiskCoverageCurve,
    abstention_shares,
    aurac,
    auroc,
    brier_score,
    cross_fitted_isotonic,
    ece,
    isotonic_brier,
    prr,
    risk_coverage_curve,
    smooth_ece,
)

__all__ = [
    "METRICS",
    "MIN_CLASS_ANSWERS",
    "Interval",
    "MetricSummary",
    "RiskCoverageCurve",
    "abstention_shares",
    "aurac",
    "auroc",
    "bootstrap_ci",
    "brier_score",
    "class_balance_warning",
    "cross_fitted_isotonic",
    "ece",
    "evaluate",
    "isotonic_brier",
    "paired_difference_ci",
    "prr",
    "risk_coverage_curve",
    "smooth_ece",
]

#: Fewer right (or wrong) answers than this and the intervals mean little (module docstring).
MIN_CLASS_ANSWERS = 20
_ROWS_PER_CHUNK_CELLS = 2_000_000  # bootstrap chunk: resamples x questions cells in memory


@dataclass(frozen=True)
class Interval:
    """A metric's value on the data and its percentile bootstrap interval.

    Attributes:
        estimate: the metric on all the data.
        low / high: the interval bounds; equal to ``estimate`` when ``n_resamples`` is 0.
        level: the interval's coverage, e.g. 0.95.
        n_resamples: resamples drawn.
        n_valid: resamples on which the metric was defined (the interval uses these).
    """

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    n_valid: int

    def __str__(self) -> str:
        """``0.834 [0.781, 0.884]``, or the bare estimate when nothing was resampled."""
        if self.n_resamples == 0:
            return f"{self.estimate:.3f}"
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _batched(name: str, conf: np.ndarray, corr: np.ndarray, **options: Any) -> Metric:
    """Row-wise version of metric ``name`` on resampled index rows, plus point-estimate prep."""
    if name == "auroc":
        return lambda idx: cores.auroc_rows(conf[idx], corr[idx])
    if name == "prr":
        return lambda idx: cores.prr_rows(conf[idx], corr[idx])
    if name == "aurac":
        return lambda idx: cores.aurac_rows(conf[idx], corr[idx])
    if name == "ece":
        return lambda idx: cores.ece_rows(conf[idx], corr[idx], options.get("n_bins", ECE_BINS))
    if name == "brier":
        # the out-of-fold probabilities are fitted once; resamples average their squared errors
        prob = cross_fitted_isotonic(
            conf, corr, n_folds=options.get("n_folds", 5), seed=options.get("seed", 0)
        )
        return lambda idx: ((prob[idx] - corr[idx]) ** 2).mean(axis=1)
    if name == "smooth_ece":
        grid = options.get("grid", SMOOTH_ECE_GRID)
        sigma, _ = cores.smooth_ece_bandwidth(
            cores.grid_residuals(conf[None], corr[None], grid), conf.size
        )
        # the bandwidth stays at the full sample's fixed point, so one kernel serves every resample
        return lambda idx: cores.smooth_ece_rows(
            cores.grid_residuals(conf[idx], corr[idx], grid), conf.size, sigma
        )
    raise ConfigurationError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")


METRICS: dict[str, Callable[..., float]] = {
    "auroc": auroc,
    "prr": prr,
    "aurac": aurac,
    "brier": isotonic_brier,
    "ece": ece,
    "smooth_ece": smooth_ece,
}
_OPTIONS = {"brier": ("n_folds", "seed"), "ece": ("n_bins",), "smooth_ece": ("grid",)}


def _point_options(
    metric: str, options: dict[str, Any], level: float, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Check a bootstrap's arguments; the options of ``metric``'s point estimate."""
    if metric not in METRICS:
        raise ConfigurationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    unknown = set(options) - set(_OPTIONS.get(metric, ()))
    if unknown:
        raise ConfigurationError(f"metric {metric!r} takes no option(s) {sorted(unknown)}")
    if not 0.0 < level < 1.0:
        raise ConfigurationError(f"level must be in (0, 1), got {level}")
    if n_resamples < 0:
        raise ConfigurationError(f"n_resamples must be >= 0, got {n_resamples}")
    return {**options, "seed": seed} if metric == "brier" else options


def _percentile_interval(
    estimate: float,
    rows: Callable[[np.ndarray], np.ndarray],
    n: int,
    metric: str,
    n_resamples: int,
    level: float,
    seed: int,
) -> Interval:
    """``rows`` (a value per row of resampled indices of ``n`` questions) over
    ``n_resamples`` resamples, drawn in chunks; the resamples where it is NaN are left out."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _ROWS_PER_CHUNK_CELLS // n)
    values = np.concatenate(
        [
            rows(rng.integers(0, n, size=(min(chunk, n_resamples - start), n)))
            for start in range(0, n_resamples, chunk)
        ]
    )
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise UndefinedMetricError(f"{metric} is undefined on every one of {n_resamples} resamples")
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), level, n_resamples, int(values.size))


def bootstrap_ci(
    confidence: Any,
    correct: Any,
    metric: str,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    **options: Any,
) -> Interval:
    """A metric with its percentile bootstrap interval over questions.

    Args:
        confidence / correct: as for the metric.
        metric: one of ``METRICS``: ``auroc``, ``prr``, ``aurac``, ``brier``
            (cross-fitted isotonic; the out-of-fold probabilities are fitted
            once and resampled), ``ece``, ``smooth_ece`` (bandwidth held at the
            full sample's fixed point).
        n_resamples: resamples B (0 = the estimate only).
        level: interval coverage in (0, 1).
        seed: seeds ``numpy.random.default_rng``; same inputs and seed, same interval.
        **options: passed to the metric (``n_bins``, ``n_folds``, ``grid``).

    Raises:
        UndefinedMetricError: the metric is undefined on the data, or on every resample.
        ConfigurationError: bad input, unknown metric or option.
    """
    point_options = _point_options(metric, options, level, n_resamples, seed)
    estimate = METRICS[metric](confidence, correct, **point_options)
    if n_resamples == 0:  # no resampled rows to prepare (brier's fit, smooth_ece's bandwidth)
        return Interval(estimate, estimate, estimate, level, 0, 0)
    conf, corr = as_pair(confidence, correct, graded=metric == "prr")
    rows = _batched(metric, conf, corr, **point_options)
    return _percentile_interval(estimate, rows, conf.size, metric, n_resamples, level, seed)


def paired_difference_ci(
    confidence: Any,
    baseline: Any,
    correct: Any,
    metric: str = "auroc",
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    **options: Any,
) -> Interval:
    """``metric`` of ``confidence`` minus ``metric`` of ``baseline`` on the same answers,
    with a paired percentile bootstrap interval: each resample draws the same questions
    for both scores, so what the two share (the questions' difficulty) cancels out.

    Args and raises as for :func:`bootstrap_ci`; ``baseline`` is a second
    confidence score of the same answers.
    """
    point_options = _point_options(metric, options, level, n_resamples, seed)
    estimate = METRICS[metric](confidence, correct, **point_options) - METRICS[metric](
        baseline, correct, **point_options
    )
    if n_resamples == 0:
        return Interval(estimate, estimate, estimate, level, 0, 0)
    conf, corr = as_pair(confidence, correct, graded=metric == "prr")
    base, _ = as_pair(baseline, correct, graded=metric == "prr")
    ours = _batched(metric, conf, corr, **point_options)
    theirs = _batched(metric, base, corr, **point_options)
    return _percentile_interval(
        estimate, lambda idx: ours(idx) - theirs(idx), conf.size, metric, n_resamples, level, seed
    )


@dataclass
class MetricSummary:
    """Every metric of one score on one data set, with intervals: one row of a report table.

    Attributes:
        n: questions; n_correct: right answers; accuracy: their share.
        metrics: ``Interval`` by metric name, for those defined on the data.
        undefined: for the others, why (e.g. all answers correct; confidence not in [0, 1]).
        warnings: why the numbers should not be trusted, e.g. too few right answers
            (:func:`class_balance_warning`).
    """

    n: int
    n_correct: int
    accuracy: float
    metrics: dict[str, Interval] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-clean form."""
        return {
            "n": self.n,
            "n_correct": self.n_correct,
            "accuracy": self.accuracy,
            "metrics": {k: asdict(v) for k, v in self.metrics.items()},
            "undefined": dict(self.undefined),
            "warnings": list(self.warnings),
        }


def class_balance_warning(
    n_correct: int, n: int, *, minimum: int = MIN_CLASS_ANSWERS
) -> str | None:
    """A warning when right or wrong answers are too few for intervals to mean much; else None.

    Args:
        n_correct: right answers.
        n: all answers.
        minimum: the fewest right, and wrong, answers that need no warning
            (:data:`MIN_CLASS_ANSWERS`; see the module docstring for why).

    Raises:
        ConfigurationError: counts that are negative or ``n_correct > n``.
    """
    if n < 0 or not 0 <= n_correct <= n:
        raise ConfigurationError(f"need 0 <= n_correct <= n, got n_correct={n_correct}, n={n}")
    n_wrong = n - n_correct
    if n == 0 or min(n_correct, n_wrong) >= minimum:
        return None
    rare, word = (n_correct, "right") if n_correct <= n_wrong else (n_wrong, "wrong")
    share = f"none of {n} answers is {word}" if rare == 0 else f"only {rare} of {n} answers "
    share += "" if rare == 0 else f"{'is' if rare == 1 else 'are'} {word} ({rare / n:.1%})"
    return (
        f"{share}: with fewer than {minimum} {word} answers the metrics rest on a handful "
        "of questions and their intervals are too wide (or unreliable) to compare methods "
        "or to tell one from chance; evaluate on more questions before reading them"
    )


def evaluate(
    confidence: Any,
    correct: Any,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    metrics: tuple[str, ...] = tuple(METRICS),
) -> MetricSummary:
    """Compute ``metrics`` (default: all of ``METRICS``) with bootstrap intervals.

    Metrics that are undefined on these data do not raise here: they are
    listed in ``MetricSummary.undefined`` with the reason, so that a runner
    can tabulate many scores in one pass. ECE and smooth ECE are undefined
    when ``confidence`` is not in [0, 1] (a raw score is not a probability;
    calibrate it or use the isotonic Brier score). Too few right or wrong
    answers (:func:`class_balance_warning`) put a warning in
    ``MetricSummary.warnings``.

    Raises:
        ConfigurationError: bad input (empty, lengths differ, NaN, labels not 0/1).
    """
    conf, corr = as_pair(confidence, correct)
    summary = MetricSummary(n=conf.size, n_correct=int(corr.sum()), accuracy=float(corr.mean()))
    warning = class_balance_warning(summary.n_correct, summary.n)
    if warning is not None:
        summary.warnings.append(warning)
    is_probability = bool(conf.min() >= 0.0 and conf.max() <= 1.0)
    for name in metrics:
        if name in ("ece", "smooth_ece") and not is_probability:
            summary.undefined[name] = "confidence is not in [0, 1]"
            continue
        try:
            summary.metrics[name] = bootstrap_ci(
                conf, corr, name, n_resamples=n_resamples, level=level, seed=seed
            )
        except UndefinedMetricError as exc:
            summary.undefined[name] = str(exc)
    return summary
