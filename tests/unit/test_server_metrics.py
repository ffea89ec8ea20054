"""The proxy's Prometheus metrics for a report with and without a confidence."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from uq_guard_server.metrics import Metrics

from uq_guard import UncertaintyReport


def observed(*reports: UncertaintyReport) -> str:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for report in reports:
        metrics.observe_report(report)
    return generate_latest(registry).decode()


def test_a_report_without_an_estimate_is_not_a_confidence_of_zero() -> None:
    none = UncertaintyReport(
        confidence=None,
        uncertainty=None,
        method="unavailable",
        degraded=True,
        degraded_reasons=["no uncertainty estimate: the reply is returned as it is"],
    )
    sure = UncertaintyReport(confidence=0.9, uncertainty=0.1, method="degree")

    text = observed(none, sure)

    assert 'uq_guard_decisions_total{decision="answer"} 2.0' in text
    assert "uq_guard_confidence_count 1.0" in text
    assert 'uq_guard_confidence_bucket{le="0.1"} 0.0' in text
    assert "uq_guard_degraded_total 1.0" in text
