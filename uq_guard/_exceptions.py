"""The exceptions uq_guard raises, all rooted at :class:`UQGuardError`::

    UQGuardError
    ├── ConfigurationError        bad GuardConfig value or bad call argument (also a ValueError)
    ├── MissingDependencyError    an optional extra is not installed (also an ImportError)
    ├── UnsupportedModelError     guard() got an object it cannot wrap (also a TypeError)
    ├── GenerationError           the reply itself could not be generated
    ├── EmbeddingError            an embedding server (embedding_model="openai:URL#model")
    │                             failed or answered nonsense, after its retries
    ├── DegradedResultError       strict mode: a sample failed or a scorer could not run
    ├── UndefinedMetricError      an evaluation metric has no value on these data, e.g. AUROC
    │                             when every answer is correct (also a ValueError)
    └── UncertaintyAbstention     policy="raise": confidence under the threshold;
                                  carries the report and the reply it withheld

Every error message names what went wrong and, where there is one, the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uq_guard.report import UncertaintyReport


class UQGuardError(Exception):
    """Base class of every error uq_guard raises on purpose."""


class ConfigurationError(UQGuardError, ValueError):
    """A configuration value or call argument is invalid."""


class MissingDependencyError(UQGuardError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'uq-guard[{extra}]'")
        self.feature = feature
        self.extra = extra


class UnsupportedModelError(UQGuardError, TypeError):
    """``uq_guard.guard`` was given an object it does not know how to wrap."""


class GenerationError(UQGuardError):
    """The reply to the user's prompt could not be generated.

    Failed *samples* never raise this (they degrade the report); only a failed
    reply does, because then there is nothing to return.
    """

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class EmbeddingError(UQGuardError):
    """An embedding server could not embed the texts (after retrying transient failures).

    Raised by the server-backed embedder of ``embedding_model="openai:URL#model"``;
    the message names the server and what it answered. A guarded call does not
    raise it: its report is degraded and says why (strict mode raises
    :class:`DegradedResultError`).
    """


class UndefinedMetricError(UQGuardError, ValueError):
    """An evaluation metric is undefined on the data given.

    Raised instead of returning NaN, for instance for AUROC or PRR when every
    answer is correct (or every answer is wrong): there is nothing to rank.
    The message names the metric and the reason.
    """


class DegradedResultError(UQGuardError):
    """Strict mode only: the uncertainty estimate would have been degraded."""

    def __init__(self, message: str, report: UncertaintyReport) -> None:
        super().__init__(message)
        self.report = report


class UncertaintyAbstention(UQGuardError):
    """Raised by ``policy="raise"`` when confidence falls under the threshold.

    Attributes:
        report: the full :class:`~uq_guard.UncertaintyReport`.
        reply: the reply that was withheld (the adapter's native object when
            raised by an integration, else the text).
    """

    def __init__(self, report: UncertaintyReport, reply: Any = None) -> None:
        super().__init__(
            f"confidence {report.confidence:.3f} is under the threshold "
            f"{report.threshold:.3f} (method: {report.method})"
        )
        self.report = report
        self.reply = reply
