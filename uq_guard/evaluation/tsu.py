"""TSU: temperature sensitivity of uncertainty (ALGORITHMS.md §5), label-free.

A sound uncertainty measure should rise when the model samples at a higher
temperature. For temperatures ``T1 < T2 < ... < Tk`` and the same questions,
TSU is the share of questions whose uncertainty rises *strictly* at every
step, ``UQ(T1) < UQ(T2) < ... < UQ(Tk)``; a tie counts as a failure. The
Inv-Entropy paper uses ``T`` in {0.3, 0.7, 1.0, 1.4}.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError

__all__ = ["TSUResult", "tsu"]


@dataclass(frozen=True)
class TSUResult:
    """TSU over a temperature grid.

    Attributes:
        temperatures: the grid, ascending.
        chain: share of questions whose uncertainty rises strictly at every step.
        pairs: for every pair ``(Ti, Tj)`` with ``i < j``, the share with
            ``UQ(Ti) < UQ(Tj)`` (the adjacent pairs are the chain's steps).
        n_questions: questions compared.
        n_chain: how many rose at every step.
    """

    temperatures: tuple[float, ...]
    chain: float
    n_questions: int
    n_chain: int
    pairs: dict[tuple[float, float], float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-clean form (pair keys become ``"0.3->0.7"``)."""
        return {
            "temperatures": list(self.temperatures),
            "chain": self.chain,
            "n_questions": self.n_questions,
            "n_chain": self.n_chain,
            "pairs": {f"{a:g}->{b:g}": v for (a, b), v in self.pairs.items()},
        }


def tsu(uncertainty: Any, temperatures: Sequence[float]) -> TSUResult:
    """TSU of one uncertainty measure.

    Args:
        uncertainty: shape ``(n_questions, n_temperatures)``; entry ``[q, t]``
            is the uncertainty (higher = less sure) of question ``q`` sampled
            at ``temperatures[t]``. For a confidence, pass its negation.
        temperatures: strictly increasing, at least two.

    Returns:
        the chain share and every pairwise share.

    Raises:
        ConfigurationError: fewer than two temperatures, temperatures not
            strictly increasing, a shape that does not match them, no
            questions, or a NaN/infinite uncertainty (named by question and
            temperature).
    """
    temps = tuple(float(t) for t in temperatures)
    if len(temps) < 2:
        raise ConfigurationError(f"TSU needs at least two temperatures, got {list(temps)}")
    if any(b <= a for a, b in itertools.pairwise(temps)):
        raise ConfigurationError(f"temperatures must be strictly increasing, got {list(temps)}")
    values = np.asarray(uncertainty, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(temps):
        raise ConfigurationError(
            f"uncertainty must have shape (n_questions, {len(temps)}), got {values.shape}"
        )
    if values.shape[0] == 0:
        raise ConfigurationError("uncertainty has no questions")
    bad = ~np.isfinite(values)
    if bad.any():
        q, t = (int(i) for i in np.argwhere(bad)[0])
        raise ConfigurationError(
            f"uncertainty has {int(bad.sum())} NaN or infinite value(s), first for question {q} "
            f"at T={temps[t]:g}; drop those questions first"
        )
    rises = values[:, 1:] > values[:, :-1]  # strict: a tie fails
    n_chain = int(rises.all(axis=1).sum())
    pairs = {
        (temps[i], temps[j]): float((values[:, j] > values[:, i]).mean())
        for i in range(len(temps))
        for j in range(i + 1, len(temps))
    }
    return TSUResult(
        temperatures=temps,
        chain=n_chain / values.shape[0],
        n_questions=values.shape[0],
        n_chain=n_chain,
        pairs=pairs,
    )
