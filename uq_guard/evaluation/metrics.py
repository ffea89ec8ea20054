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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.stats import rankdata

from uq_guard._exceptions import ConfigurationError, UndefinedMetricError
from uq_guard.evaluation._arrays import as_pair, import_sklearn

__all__ = [
    "METRICS",
    "MIN_CLASS_ANSWERS",
    "Interval",
    "MetricSummary",
    "RiskCoverageCurve",
    "aurac",
    "auroc",
    "bootstrap_ci",
    "brier_score",
    "class_balance_warning",
    "cross_fitted_isotonic",
    "ece",
    "evaluate",
    "isotonic_brier",
    "prr",
    "risk_coverage_curve",
    "smooth_ece",
]

ECE_BINS = 15
#: Fewer right (or wrong) answers than this and the intervals mean little (module docstring).
MIN_CLASS_ANSWERS = 20
SMOOTH_ECE_GRID = 1001
_ROWS_PER_CHUNK_CELLS = 2_000_000  # bootstrap chunk: resamples x questions cells in memory


# ---------------------------------------------------------------------------
# Batched cores: every row of a (B, n) array is one data set. They return NaN
# for an undefined row; only the public wrappers turn that into an error.
# ---------------------------------------------------------------------------


def _sorted_rows(conf: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows sorted by ascending confidence, plus a mask of where a new tie group starts."""
    order = np.argsort(conf, axis=1, kind="stable")
    sorted_conf = np.take_along_axis(conf, order, axis=1)
    new_group = np.ones(conf.shape, dtype=bool)
    new_group[:, 1:] = sorted_conf[:, 1:] != sorted_conf[:, :-1]
    return (sorted_conf, new_group, *(np.take_along_axis(o, order, axis=1) for o in others))


def _tie_averaged(values: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Replace each value by the mean of its tie group (rows already sorted)."""
    group = np.cumsum(new_group.ravel()) - 1  # each row starts a group, so ids never cross rows
    sums = np.bincount(group, weights=values.ravel())
    counts = np.bincount(group)
    return (sums / counts)[group].reshape(values.shape)


def _retained_loss(conf: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Expected total loss kept after rejecting the k least confident, k = 0..n; shape (B, n+1)."""
    _, new_group, sorted_loss = _sorted_rows(conf, loss)
    rejected = np.cumsum(_tie_averaged(sorted_loss, new_group), axis=1)
    total = loss.sum(axis=1, keepdims=True)
    return np.concatenate([total, total - rejected], axis=1)


def _auroc_rows(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    n_pos = correct.sum(axis=1)
    n_neg = correct.shape[1] - n_pos
    ranks = rankdata(conf, axis=1, method="average")  # ties count one half
    rank_sum = (ranks * correct).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _prr_rows(conf: np.ndarray, quality: np.ndarray) -> np.ndarray:
    n = conf.shape[1]
    loss = 1.0 - quality
    total = loss.sum(axis=1)

    def area(retained: np.ndarray) -> np.ndarray:
        # trapezoid under (k/n, retained(k)/n), k = 0..n; retained(n) = 0
        return (retained.sum(axis=1) - retained[:, 0] / 2) / n**2

    area_score = area(_retained_loss(conf, loss))
    oracle_order = np.sort(loss, axis=1)[:, ::-1]  # the oracle rejects the worst first
    area_oracle = area(
        np.concatenate([total[:, None], total[:, None] - np.cumsum(oracle_order, 1)], 1)
    )
    area_random = total / (2 * n)
    gap = area_random - area_oracle
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 1e-15, (area_random - area_score) / gap, np.nan)


def _aurac_rows(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    n = conf.shape[1]
    kept_correct = _retained_loss(conf, correct)[:, :n]  # "loss" = correctness here
    return (kept_correct / np.arange(n, 0, -1)).mean(axis=1)


def _ece_rows(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    n_rows, n = conf.shape
    sorted_conf, new_group, sorted_correct = _sorted_rows(conf, correct)
    position = np.broadcast_to(np.arange(n), conf.shape)
    first_of_group = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    bins = first_of_group * n_bins // n + (np.arange(n_rows) * n_bins)[:, None]
    size = n_rows * n_bins
    gap = np.bincount(bins.ravel(), weights=(sorted_conf - sorted_correct).ravel(), minlength=size)
    return np.abs(gap.reshape(n_rows, n_bins)).sum(axis=1) / n


def _grid_residuals(conf: np.ndarray, correct: np.ndarray, grid: int) -> np.ndarray:
    """Residual mass (correct - conf) spread linearly onto ``grid`` points of [0, 1]; (B, grid)."""
    n_rows = conf.shape[0]
    where = conf * (grid - 1)
    lower = np.clip(np.floor(where).astype(int), 0, grid - 2)
    frac = where - lower
    residual = correct - conf
    offset = (np.arange(n_rows) * grid)[:, None]
    mass = np.bincount(
        np.concatenate([(lower + offset).ravel(), (lower + 1 + offset).ravel()]),
        weights=np.concatenate([((1 - frac) * residual).ravel(), (frac * residual).ravel()]),
        minlength=n_rows * grid,
    )
    return mass.reshape(n_rows, grid)


def _reflected_kernel(sigma: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian of width sigma reflected at 0 and 1, on the grid.

    ``K(t_a, t_b) = by_difference[a - b + grid - 1] + by_sum[a + b]``: the
    images of a point ``s`` under the reflections are ``s + 2k`` and ``-s + 2k``.
    """
    h = 1.0 / (grid - 1)
    images = np.arange(-4, 5)[:, None] * 2.0

    def gauss(x: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((x - images) / sigma) ** 2).sum(axis=0) / (sigma * np.sqrt(2 * np.pi))

    return gauss(np.arange(-(grid - 1), grid) * h), gauss(np.arange(0, 2 * grid - 1) * h)


def _smooth_ece_rows(mass: np.ndarray, n: int, sigma: float) -> np.ndarray:
    grid = mass.shape[1]
    by_difference, by_sum = _reflected_kernel(sigma, grid)
    window = slice(grid - 1, 2 * grid - 1)
    smoothed = (
        fftconvolve(mass, by_difference[None], axes=1)[:, window]
        + fftconvolve(mass[:, ::-1], by_sum[None], axes=1)[:, window]
    )
    smoothed = np.abs(smoothed) / n
    h = 1.0 / (grid - 1)
    return h * (smoothed.sum(axis=1) - (smoothed[:, 0] + smoothed[:, -1]) / 2)


# ---------------------------------------------------------------------------
# Public metrics
# ---------------------------------------------------------------------------


def _defined(value: float, metric: str, correct: np.ndarray) -> float:
    if np.isnan(value):
        n_right = int(correct.sum())
        which = "correct" if n_right == correct.size else "wrong" if n_right == 0 else "alike"
        raise UndefinedMetricError(
            f"{metric} is undefined: every one of the {correct.size} answers is {which}, "
            "so there is nothing to rank; evaluate on data with both right and wrong answers"
        )
    return float(value)


def auroc(confidence: Any, correct: Any) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers.

    The probability that a random right answer has a higher confidence than a
    random wrong one, ties counting one half (Mann–Whitney). 1 = perfect, 0.5
    = no better than chance, 0 = perfectly inverted. Equal to scikit-learn's
    ``roc_auc_score(correct, confidence)``; computed from ranks so that the
    bootstrap can do all resamples in one pass.

    Raises:
        UndefinedMetricError: every answer is correct, or every answer is wrong.
        ConfigurationError: bad input (see the module docstring).
    """
    conf, corr = as_pair(confidence, correct)
    return _defined(_auroc_rows(conf[None], corr[None])[0], "AUROC", corr)


def prr(confidence: Any, correct: Any) -> float:
    """Prediction rejection ratio (Malinin & Gales), the share of the oracle's gain achieved.

    Reject answers from the least confident up, handing each rejected one to
    an oracle (its loss becomes 0), and follow the total loss of the whole
    set as the rejected fraction goes from 0 to 1: the *rejection curve*.
    ``PRR = (A_random - A_score) / (A_random - A_oracle)``, where ``A`` is the
    area under the rejection curve of random rejection, of the score and of
    the oracle (which rejects the wrong answers first). 1 = oracle, 0 =
    random, -1 = perfectly inverted. For 0/1 correctness this equals
    ``2 * AUROC - 1``; it differs from AUROC once ``correct`` is graded.

    This is *not* the AUPRC ratio the Inv-Entropy authors' code reports
    under that name (ALGORITHMS.md §5).

    Args:
        confidence: higher = more trusted.
        correct: 0/1 labels, or a graded quality in [0, 1] (loss = 1 - quality).

    Raises:
        UndefinedMetricError: all losses are equal (e.g. every answer correct),
            so the oracle gains nothing over random.
        ConfigurationError: bad input.
    """
    conf, quality = as_pair(confidence, correct, graded=True)
    return _defined(_prr_rows(conf[None], quality[None])[0], "PRR", quality)


def aurac(confidence: Any, correct: Any) -> float:
    """Area under the rejection–accuracy curve.

    The accuracy among the answers kept after rejecting the ``k`` least
    confident, averaged over ``k = 0 .. n-1`` (rejection fractions 0 to
    (n-1)/n, each of width 1/n). Higher is better; ``1 - aurac`` is the area
    under the risk–coverage curve. Defined on one class too: 1.0 when every
    answer is correct, 0.0 when every answer is wrong.

    Raises:
        ConfigurationError: bad input.
    """
    conf, corr = as_pair(confidence, correct)
    return float(_aurac_rows(conf[None], corr[None])[0])


def ece(confidence: Any, correct: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-mass bins (default 15).

    Questions are sorted by confidence and cut into bins of equal count
    (sizes differ by at most one); a group of equal confidences is never
    split, it joins the bin of its first member, so a bin can be larger and
    a later one empty (empty bins are skipped). ``ECE = sum_b (n_b / n) *
    |mean confidence_b - accuracy_b|``. Defined on one class (all-correct
    data give ``1 - mean confidence``); with fewer questions than bins each
    question is its own bin.

    Raises:
        ConfigurationError: bad input, confidence outside [0, 1], ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ConfigurationError(f"n_bins must be at least 1, got {n_bins}")
    conf, corr = as_pair(confidence, correct, unit=True)
    return float(_ece_rows(conf[None], corr[None], n_bins)[0])


def _smooth_ece_bandwidth(mass: np.ndarray, n: int) -> tuple[float, float]:
    """Błasiok–Nakkiran's bandwidth: the sigma where smECE_sigma(f, y) = sigma (bisection)."""
    grid = mass.shape[1]
    low, high = 2.0 / (grid - 1), 1.0  # below two grid steps the kernel is not resolved

    def value(sigma: float) -> float:
        return float(_smooth_ece_rows(mass, n, sigma)[0])

    at_low = value(low)
    if at_low <= low:
        return low, at_low
    for _ in range(32):  # smECE_sigma decreases in sigma, so the fixed point is unique
        mid = (low + high) / 2
        if value(mid) > mid:
            low = mid
        else:
            high = mid
    sigma = (low + high) / 2
    return sigma, value(sigma)


def smooth_ece(
    confidence: Any,
    correct: Any,
    *,
    bandwidth: float | None = None,
    grid: int = SMOOTH_ECE_GRID,
) -> float:
    """Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE"), the kernel-smoothed calibration error.

    The residuals ``correct - confidence`` are smoothed with a Gaussian kernel
    of width ``sigma`` reflected at 0 and 1 (so no mass leaks out of the unit
    interval), and ``smECE_sigma = integral over t in [0, 1] of
    |(1/n) sum_i K_sigma(t, f_i) (y_i - f_i)|``: the smoothed residual weighted
    by the smoothed density of predictions. The default bandwidth is the
    authors' hyperparameter-free choice, the fixed point ``smECE_sigma =
    sigma`` (found by bisection; floored at two grid steps, where a perfectly
    calibrated sample then scores about 0). The integral is a trapezoid rule
    on ``grid`` evenly spaced points, the data spread onto it by linear
    binning (as the authors' ``relplot`` does). Unlike binned ECE it is
    continuous in the predictions. Defined on one class.

    Args:
        confidence: probabilities in [0, 1].
        correct: 0/1 labels.
        bandwidth: a fixed ``sigma`` instead of the fixed point.
        grid: integration points on [0, 1].

    Raises:
        ConfigurationError: bad input, confidence outside [0, 1], bad bandwidth or grid.
    """
    if grid < 11:
        raise ConfigurationError(f"grid must be at least 11 points, got {grid}")
    if bandwidth is not None and not (0.0 < bandwidth <= 10.0):
        raise ConfigurationError(f"bandwidth must be in (0, 10], got {bandwidth}")
    conf, corr = as_pair(confidence, correct, unit=True)
    mass = _grid_residuals(conf[None], corr[None], grid)
    if bandwidth is not None:
        return float(_smooth_ece_rows(mass, conf.size, bandwidth)[0])
    return _smooth_ece_bandwidth(mass, conf.size)[1]


def brier_score(probability: Any, correct: Any) -> float:
    """Mean squared difference between a probability of being right and the 0/1 outcome.

    Raises:
        ConfigurationError: bad input or probabilities outside [0, 1].
    """
    prob, corr = as_pair(probability, correct, unit=True)
    return float(np.mean((prob - corr) ** 2))


def cross_fitted_isotonic(
    confidence: Any, correct: Any, *, n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold P(correct) from an isotonic map: each question's value comes from a
    map fitted on the other folds, never on itself (ALGORITHMS.md §7.6).

    Folds are stratified by correctness when each class has at least
    ``n_folds`` members, plain shuffled folds otherwise; both are seeded. A
    fold whose training part holds one class predicts that class's rate
    (0 or 1) — isotonic regression's own answer, not an error.

    Needs scikit-learn (the ``eval`` extra).

    Raises:
        ConfigurationError: bad input, or fewer questions than folds (or ``n_folds < 2``).
        MissingDependencyError: scikit-learn is not installed.
    """
    import_sklearn("the cross-fitted isotonic Brier score")
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold, StratifiedKFold

    conf, corr = as_pair(confidence, correct)
    if n_folds < 2:
        raise ConfigurationError(f"n_folds must be at least 2, got {n_folds}")
    if conf.size < n_folds:
        raise ConfigurationError(
            f"{n_folds}-fold cross-fitting needs at least {n_folds} questions, got {conf.size}"
        )
    n_right = int(corr.sum())
    if min(n_right, conf.size - n_right) >= n_folds:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(conf, corr)
    else:
        splits = KFold(n_folds, shuffle=True, random_state=seed).split(conf)
    out = np.empty_like(conf)
    for train, test in splits:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(conf[train], corr[train])
        out[test] = iso.predict(conf[test])
    return out


def isotonic_brier(confidence: Any, correct: Any, *, n_folds: int = 5, seed: int = 0) -> float:
    """Brier score of the cross-fitted isotonic map of ``confidence`` (see
    :func:`cross_fitted_isotonic`): how good the score is as a probability once
    monotonically recalibrated, measured out of sample. Any real score works
    (it need not lie in [0, 1]). Defined on one class (0.0: the map predicts it).

    Raises:
        ConfigurationError: bad input or too few questions for the folds.
        MissingDependencyError: scikit-learn is not installed.
    """
    prob = cross_fitted_isotonic(confidence, correct, n_folds=n_folds, seed=seed)
    return brier_score(prob, correct)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Error rate among answered questions for every threshold one can set.

    Entry ``i`` answers the questions with ``confidence >= threshold[i]``
    (the policies act on ``confidence < threshold``). Thresholds are the
    distinct confidences, highest first, so coverage grows along the arrays.

    Attributes:
        threshold: distinct confidence values, descending.
        coverage: share of questions answered.
        risk: share of the answered that are wrong.
        n_answered / n_errors: the counts behind them.
    """

    threshold: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray
    n_answered: np.ndarray
    n_errors: np.ndarray


def risk_coverage_curve(confidence: Any, correct: Any) -> RiskCoverageCurve:
    """The risk–coverage curve at every distinct confidence (see :class:`RiskCoverageCurve`).

    Raises:
        ConfigurationError: bad input.
    """
    conf, corr = as_pair(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    desc, wrong = conf[order], 1.0 - corr[order]
    last_of_group = np.append(desc[1:] != desc[:-1], True)
    n_answered = np.flatnonzero(last_of_group) + 1
    n_errors = np.cumsum(wrong)[last_of_group]
    return RiskCoverageCurve(
        threshold=desc[last_of_group],
        coverage=n_answered / conf.size,
        risk=n_errors / n_answered,
        n_answered=n_answered,
        n_errors=n_errors.round().astype(int),
    )


# ---------------------------------------------------------------------------
# Bootstrap intervals and the one-call summary
# ---------------------------------------------------------------------------


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


Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _batched(name: str, conf: np.ndarray, corr: np.ndarray, **options: Any) -> Metric:
    """Row-wise version of metric ``name`` on resampled index rows, plus point-estimate prep."""
    if name == "auroc":
        return lambda idx: _auroc_rows(conf[idx], corr[idx])
    if name == "prr":
        return lambda idx: _prr_rows(conf[idx], corr[idx])
    if name == "aurac":
        return lambda idx: _aurac_rows(conf[idx], corr[idx])
    if name == "ece":
        return lambda idx: _ece_rows(conf[idx], corr[idx], options.get("n_bins", ECE_BINS))
    if name == "brier":
        # the out-of-fold probabilities are fitted once; resamples average their squared errors
        prob = cross_fitted_isotonic(
            conf, corr, n_folds=options.get("n_folds", 5), seed=options.get("seed", 0)
        )
        return lambda idx: ((prob[idx] - corr[idx]) ** 2).mean(axis=1)
    if name == "smooth_ece":
        grid = options.get("grid", SMOOTH_ECE_GRID)
        sigma, _ = _smooth_ece_bandwidth(_grid_residuals(conf[None], corr[None], grid), conf.size)
        # the bandwidth stays at the full sample's fixed point, so one kernel serves every resample
        return lambda idx: _smooth_ece_rows(
            _grid_residuals(conf[idx], corr[idx], grid), conf.size, sigma
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
    if metric not in METRICS:
        raise ConfigurationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    unknown = set(options) - set(_OPTIONS.get(metric, ()))
    if unknown:
        raise ConfigurationError(f"metric {metric!r} takes no option(s) {sorted(unknown)}")
    if not 0.0 < level < 1.0:
        raise ConfigurationError(f"level must be in (0, 1), got {level}")
    if n_resamples < 0:
        raise ConfigurationError(f"n_resamples must be >= 0, got {n_resamples}")
    point_options = {**options, "seed": seed} if metric == "brier" else options
    estimate = METRICS[metric](confidence, correct, **point_options)
    if n_resamples == 0:
        return Interval(estimate, estimate, estimate, level, 0, 0)

    conf, corr = as_pair(confidence, correct, graded=metric == "prr")
    rows = _batched(metric, conf, corr, **point_options)
    rng = np.random.default_rng(seed)
    chunk = max(1, _ROWS_PER_CHUNK_CELLS // conf.size)
    values = np.concatenate(
        [
            rows(rng.integers(0, conf.size, size=(min(chunk, n_resamples - start), conf.size)))
            for start in range(0, n_resamples, chunk)
        ]
    )
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise UndefinedMetricError(f"{metric} is undefined on every one of {n_resamples} resamples")
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), level, n_resamples, int(values.size))


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
