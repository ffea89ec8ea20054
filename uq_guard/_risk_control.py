"""Risk control: an abstention threshold with a bound on the error rate of what is answered.

ALGORITHMS.md §6. The threshold is fitted by
:func:`uq_guard.evaluation.calibrators.risk_controlled_threshold` and carried
in a calibration file (:class:`uq_guard.calibration.Calibrator`, which
re-exports these names).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import beta

from uq_guard._exceptions import ConfigurationError

__all__ = ["RiskControl", "clopper_pearson_upper"]


class RiskControl(BaseModel):
    """A risk-controlled abstention threshold.

    Fitted by :func:`uq_guard.evaluation.calibrators.risk_controlled_threshold`.

    Attributes:
        alpha: target error rate among answered questions.
        delta: allowed probability that the true answered error rate exceeds alpha.
        feasible: a threshold qualified; when False ``threshold`` is None and
            the guard should abstain on everything (or alpha is too strict for
            this score and this much data).
        threshold: answer when ``confidence >= threshold``; pass it as
            ``GuardConfig.threshold`` (policies act on ``confidence < threshold``).
        coverage: share of the calibration questions it answers.
        n / n_answered / n_errors: calibration questions, those answered, the wrong among them.
        error_rate: ``n_errors / n_answered`` (0 when nothing is answered).
        error_upper_bound: the Clopper–Pearson upper bound at level delta.
        reason: a sentence saying what was found.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(gt=0.0, lt=1.0)
    delta: float = Field(gt=0.0, lt=1.0)
    feasible: bool
    threshold: float | None
    coverage: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=0)
    n_answered: int = Field(ge=0)
    n_errors: int = Field(ge=0)
    error_rate: float = Field(ge=0.0, le=1.0)
    error_upper_bound: float = Field(ge=0.0, le=1.0)
    reason: str = ""


def clopper_pearson_upper(n_errors: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson upper bound on an error rate at level ``delta``.

    The true rate is below the bound with probability at least ``1 - delta``:
    ``Beta(1 - delta; n_errors + 1, n - n_errors)``, and 1 when
    ``n_errors == n`` or ``n == 0`` (nothing observed bounds nothing).

    Raises:
        ConfigurationError: counts out of range or ``delta`` not in (0, 1).
    """
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta}")
    if n < 0 or not 0 <= n_errors <= n:
        raise ConfigurationError(f"need 0 <= n_errors <= n, got n_errors={n_errors}, n={n}")
    if n_errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, n_errors + 1, n - n_errors))
