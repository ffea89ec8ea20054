"""The metrics' batched cores: every row of a ``(B, n)`` array is one data set.

All resamples of a bootstrap are computed at once from these (no Python loop
per resample). They return NaN for an undefined row; only the public metrics
(:mod:`uq_guard.evaluation.point_metrics`) turn that into an error. Ties are
broken in expectation (see :mod:`uq_guard.evaluation.metrics`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve
from scipy.stats import rankdata

__all__ = [
    "aurac_rows",
    "auroc_rows",
    "ece_rows",
    "grid_residuals",
    "prr_rows",
    "smooth_ece_bandwidth",
    "smooth_ece_rows",
]


def sorted_rows(conf: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows sorted by ascending confidence, plus a mask of where a new tie group starts."""
    order = np.argsort(conf, axis=1, kind="stable")
    sorted_conf = np.take_along_axis(conf, order, axis=1)
    new_group = np.ones(conf.shape, dtype=bool)
    new_group[:, 1:] = sorted_conf[:, 1:] != sorted_conf[:, :-1]
    return (sorted_conf, new_group, *(np.take_along_axis(o, order, axis=1) for o in others))


def tie_averaged(values: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Replace each value by the mean of its tie group (rows already sorted)."""
    group = np.cumsum(new_group.ravel()) - 1  # each row starts a group, so ids never cross rows
    sums = np.bincount(group, weights=values.ravel())
    counts = np.bincount(group)
    return (sums / counts)[group].reshape(values.shape)


def retained_loss(conf: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Expected total loss kept after rejecting the k least confident, k = 0..n; shape (B, n+1)."""
    _, new_group, sorted_loss = sorted_rows(conf, loss)
    rejected = np.cumsum(tie_averaged(sorted_loss, new_group), axis=1)
    total = loss.sum(axis=1, keepdims=True)
    return np.concatenate([total, total - rejected], axis=1)


def auroc_rows(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    n_pos = correct.sum(axis=1)
    n_neg = correct.shape[1] - n_pos
    ranks = rankdata(conf, axis=1, method="average")  # ties count one half
    rank_sum = (ranks * correct).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def prr_rows(conf: np.ndarray, quality: np.ndarray) -> np.ndarray:
    n = conf.shape[1]
    loss = 1.0 - quality
    total = loss.sum(axis=1)

    def area(retained: np.ndarray) -> np.ndarray:
        # trapezoid under (k/n, retained(k)/n), k = 0..n; retained(n) = 0
        return (retained.sum(axis=1) - retained[:, 0] / 2) / n**2

    area_score = area(retained_loss(conf, loss))
    oracle_order = np.sort(loss, axis=1)[:, ::-1]  # the oracle rejects the worst first
    area_oracle = area(
        np.concatenate([total[:, None], total[:, None] - np.cumsum(oracle_order, 1)], 1)
    )
    area_random = total / (2 * n)
    gap = area_random - area_oracle
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 1e-15, (area_random - area_score) / gap, np.nan)


def aurac_rows(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    n = conf.shape[1]
    kept_correct = retained_loss(conf, correct)[:, :n]  # "loss" = correctness here
    return (kept_correct / np.arange(n, 0, -1)).mean(axis=1)


def ece_rows(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    n_rows, n = conf.shape
    sorted_conf, new_group, sorted_correct = sorted_rows(conf, correct)
    position = np.broadcast_to(np.arange(n), conf.shape)
    first_of_group = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    bins = first_of_group * n_bins // n + (np.arange(n_rows) * n_bins)[:, None]
    size = n_rows * n_bins
    gap = np.bincount(bins.ravel(), weights=(sorted_conf - sorted_correct).ravel(), minlength=size)
    return np.abs(gap.reshape(n_rows, n_bins)).sum(axis=1) / n


def grid_residuals(conf: np.ndarray, correct: np.ndarray, grid: int) -> np.ndarray:
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


def reflected_kernel(sigma: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian of width sigma reflected at 0 and 1, on the grid.

    ``K(t_a, t_b) = by_difference[a - b + grid - 1] + by_sum[a + b]``: the
    images of a point ``s`` under the reflections are ``s + 2k`` and ``-s + 2k``.
    """
    h = 1.0 / (grid - 1)
    images = np.arange(-4, 5)[:, None] * 2.0

    def gauss(x: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((x - images) / sigma) ** 2).sum(axis=0) / (sigma * np.sqrt(2 * np.pi))

    return gauss(np.arange(-(grid - 1), grid) * h), gauss(np.arange(0, 2 * grid - 1) * h)


def smooth_ece_rows(mass: np.ndarray, n: int, sigma: float) -> np.ndarray:
    grid = mass.shape[1]
    by_difference, by_sum = reflected_kernel(sigma, grid)
    window = slice(grid - 1, 2 * grid - 1)
    smoothed = (
        fftconvolve(mass, by_difference[None], axes=1)[:, window]
        + fftconvolve(mass[:, ::-1], by_sum[None], axes=1)[:, window]
    )
    smoothed = np.abs(smoothed) / n
    h = 1.0 / (grid - 1)
    return h * (smoothed.sum(axis=1) - (smoothed[:, 0] + smoothed[:, -1]) / 2)


def smooth_ece_bandwidth(mass: np.ndarray, n: int) -> tuple[float, float]:
    """Błasiok–Nakkiran's bandwidth: the sigma where smECE_sigma(f, y) = sigma (bisection)."""
    grid = mass.shape[1]
    low, high = 2.0 / (grid - 1), 1.0  # below two grid steps the kernel is not resolved

    def value(sigma: float) -> float:
        return float(smooth_ece_rows(mass, n, sigma)[0])

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
