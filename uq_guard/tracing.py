"""OpenTelemetry spans for guarded calls: one span per call, one child span per step.

Spans are made through ``opentelemetry-api`` (``pip install uq-guard[tracing]``)
and go wherever the application's OpenTelemetry SDK sends them (Jaeger,
Tempo, Honeycomb, Langfuse, LangSmith's OTel endpoint ...). Until an SDK is
configured the API hands out non-recording spans, which cost microseconds
each (about 0.1 ms for one call's six spans on a busy 2-core machine) and
compute no attributes; without ``opentelemetry-api`` installed no span is
made at all and the engine runs exactly as before.

The spans of one guarded call::

    uq_guard.guard          the whole call; attributes from the report (below)
    ├── uq_guard.perturb    uq_guard.perturbation.method / .requested / .real,
    │                       uq_guard.n_prompts (a paraphraser's model calls count here)
    ├── uq_guard.generate   one per batched round: uq_guard.generate.requests,
    │                       .samples (texts asked for), .failed, .tokens
    ├── uq_guard.score      one per scoring pass: uq_guard.n_prompts, uq_guard.method
    │   └── uq_guard.embed  uq_guard.embed.texts (distinct texts embedded)
    └── uq_guard.decide     uq_guard.policy, uq_guard.threshold, uq_guard.decision;
                            the fallback model's generate and score spans nest here

``uq_guard.embed`` is a child of ``uq_guard.score`` because scoring embeds
(``timings_ms["score"]`` includes it). On the call span: ``uq_guard.confidence``
(absent when there is no estimate), ``uq_guard.decision``, ``uq_guard.policy``,
``uq_guard.method``, ``uq_guard.calibrated``, ``uq_guard.n_prompts``,
``uq_guard.n_samples``, ``uq_guard.n_failed``, ``uq_guard.model_calls``,
``uq_guard.prompt_tokens``, ``uq_guard.completion_tokens``,
``uq_guard.total_tokens``, ``uq_guard.degraded`` and, when degraded,
``uq_guard.degraded_reasons``. An exception leaving a span (a failed reply,
``policy="raise"``, strict mode) is recorded on it with
an error status, the attributes set before it included.

A :class:`~uq_guard.Guard` uses the global tracer provider, or the one passed
as ``Guard(..., tracer_provider=...)`` (tests, or an application with several).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from uq_guard.backend import Backend, Generation, GenerationRequest
    from uq_guard.embeddings import Embedder
    from uq_guard.perturb import PerturbationResult
    from uq_guard.report import UncertaintyReport

__all__ = [
    "CALL_SPAN",
    "DECIDE_SPAN",
    "EMBED_SPAN",
    "GENERATE_SPAN",
    "INSTRUMENTATION_NAME",
    "PERTURB_SPAN",
    "SCORE_SPAN",
    "GuardTracing",
    "record_perturbation",
    "record_report",
]

#: The instrumentation scope name of every uq_guard span.
INSTRUMENTATION_NAME = "uq_guard"
CALL_SPAN = "uq_guard.guard"
PERTURB_SPAN = "uq_guard.perturb"
GENERATE_SPAN = "uq_guard.generate"
SCORE_SPAN = "uq_guard.score"
EMBED_SPAN = "uq_guard.embed"
DECIDE_SPAN = "uq_guard.decide"

AttributeValue = str | bool | int | float | Sequence[str]


class _NoSpan:
    """Stands in for a span when ``opentelemetry-api`` is not installed."""

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Any) -> None:
        pass


_NO_SPAN = _NoSpan()


def _otel_tracer(tracer_provider: Any) -> Any:
    """An OpenTelemetry tracer, or None when ``opentelemetry-api`` is not installed.

    The import is made here, not at module level, so that the engine imports
    without the package.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    version = getattr(sys.modules.get("uq_guard"), "__version__", None)
    # with no provider given this is a proxy: it follows a global SDK configured later
    return trace.get_tracer(INSTRUMENTATION_NAME, version, tracer_provider=tracer_provider)


class GuardTracing:
    """The spans of one :class:`~uq_guard.Guard`.

    Args:
        tracer_provider: an OpenTelemetry ``TracerProvider``; None uses the
            global one (a no-op until an SDK is configured).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = _otel_tracer(tracer_provider)

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all (``opentelemetry-api`` is installed)."""
        return self._tracer is not None

    def span(self, name: str, **attributes: AttributeValue | None) -> AbstractContextManager[Any]:
        """Open a span as the current one; None-valued attributes are left out.

        Args:
            name: the span name (one of this module's ``*_SPAN``).
            **attributes: ``uq_guard.<key>`` attributes set when the span starts.

        Returns:
            a context manager giving the span (with ``set_attribute`` and
            ``is_recording``), which records an exception leaving it.
        """
        if self._tracer is None:
            return nullcontext(_NO_SPAN)
        return self._tracer.start_as_current_span(name, attributes=_attributes(attributes))

    def backend(self, backend: Backend) -> Backend:
        """``backend`` with a ``uq_guard.generate`` span around each batched round."""
        return backend if self._tracer is None else _TracedBackend(backend, self)

    def embedder(self, embedder: Embedder) -> Embedder:
        """``embedder`` with a ``uq_guard.embed`` span around each ``encode``."""
        return embedder if self._tracer is None else _TracedEmbedder(embedder, self)


def record_perturbation(span: Any, perturbation: PerturbationResult) -> None:
    """Put what the perturber made on the ``uq_guard.perturb`` span."""
    if span.is_recording():
        span.set_attributes(
            _attributes(
                {
                    "perturbation.method": perturbation.method,
                    "perturbation.requested": perturbation.n_requested,
                    "perturbation.real": perturbation.real_count,
                    "n_prompts": 1 + len(perturbation.prompts),
                }
            )
        )


def record_report(span: Any, report: UncertaintyReport) -> None:
    """Put the report's headline numbers on the call span (``uq_guard.guard``)."""
    if not span.is_recording():
        return
    span.set_attributes(
        _attributes(
            {
                "confidence": report.confidence,
                "decision": report.decision,
                "method": report.method,
                "policy": report.policy,
                "calibrated": report.calibrated,
                "n_prompts": report.n_prompts,
                "n_samples": report.n_samples,
                "n_failed": report.n_failed,
                "model_calls": report.cost.model_calls,
                "prompt_tokens": report.cost.prompt_tokens,
                "completion_tokens": report.cost.completion_tokens,
                "total_tokens": report.cost.total_tokens,
                "degraded": report.degraded,
                "degraded_reasons": list(report.degraded_reasons) or None,
            }
        )
    )


def _attributes(values: dict[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    # OpenTelemetry drops None values with a warning: leave them out instead. numpy
    # scalars are not valid attribute types either
    return {
        f"uq_guard.{key}": value.item() if isinstance(value, np.generic) else value
        for key, value in values.items()
        if value is not None
    }


class _TracedBackend:
    """A backend whose every ``generate`` round is a ``uq_guard.generate`` span."""

    def __init__(self, backend: Backend, tracing: GuardTracing) -> None:
        self._backend = backend
        self._tracing = tracing

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        with self._tracing.span(
            GENERATE_SPAN,
            **{
                "generate.requests": len(requests),
                "generate.samples": sum(request.n for request in requests),
            },
        ) as span:
            generations = await self._backend.generate(requests)
            if span.is_recording():
                span.set_attributes(
                    _attributes(
                        {
                            "generate.failed": sum(1 for g in generations if not g.ok),
                            "generate.tokens": sum(g.usage.total_tokens for g in generations),
                        }
                    )
                )
            return generations


class _TracedEmbedder:
    """An embedder whose every ``encode`` is a ``uq_guard.embed`` span."""

    def __init__(self, embedder: Embedder, tracing: GuardTracing) -> None:
        self._embedder = embedder
        self._tracing = tracing

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._tracing.span(EMBED_SPAN, **{"embed.texts": len(texts)}):
            return self._embedder.encode(texts)
