"""The proxy's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from uq_guard.report import UncertaintyReport

_CONFIDENCE_BUCKETS = tuple(i / 10 for i in range(1, 11))
_PATHS = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/metrics"})
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Requests, decisions, confidence, upstream calls and latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "uq_guard_requests", "HTTP requests served.", ["path", "status"], registry=registry
        )
        self.latency = Histogram(
            "uq_guard_request_latency_seconds",
            "Time to answer a request (to the first byte for streams).",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "uq_guard_decisions", "Guarded replies by decision.", ["decision"], registry=registry
        )
        self.confidence = Histogram(
            "uq_guard_confidence",
            "Confidence of guarded replies that had an estimate.",
            buckets=_CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.degraded = Counter(
            "uq_guard_degraded", "Guarded replies with a degraded report.", registry=registry
        )
        self.upstream_calls = Counter(
            "uq_guard_upstream_calls", "Model calls made for guarded replies.", registry=registry
        )
        self.errors = Counter(
            "uq_guard_errors", "Chat requests answered with an error.", ["type"], registry=registry
        )

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        # Unknown paths share one label so a scanner cannot blow up the series count.
        known = path if path in _PATHS else "other"
        self.requests.labels(known, str(status)).inc()
        self.latency.labels(known).observe(seconds)

    def observe_report(self, report: UncertaintyReport | None) -> None:
        if report is None:
            self.decisions.labels("unguarded").inc()
            return
        self.decisions.labels(report.decision).inc()
        # No estimate is not a confidence of 0: such replies count only as degraded.
        if report.confidence is not None:
            self.confidence.observe(report.confidence)
        self.upstream_calls.inc(report.cost.model_calls)
        if report.degraded:
            self.degraded.inc()

    def observe_error(self, kind: str) -> None:
        self.errors.labels(kind).inc()
