"""How the proxy runs: :class:`ServerSettings` and the default number of active requests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard_server.policy import PolicyError, ServerPolicy


def default_active_requests() -> int:
    """One chat request at work per CPU core (at least 2).

    A guarded call's own work (GAAP, embedding, scoring) is CPU: requests at
    work beyond the cores share them and each gets slower, so a burst's p95
    grows with every extra slot (``benchmarks/results/reliability.md``).
    """
    return max(2, os.cpu_count() or 2)


@dataclass
class ServerSettings:
    """How the proxy runs.

    Attributes:
        guard: default settings of every guarded call (a request's
            ``uq_guard`` object overrides the settings ``policy`` allows).
        policy: the allow-list of per-request settings and the per-request
            caps (see :class:`~uq_guard_server.policy.ServerPolicy`).
        api_key: when set, clients must send ``Authorization: Bearer <key>``
            (the scheme in any case, RFC 6750); a raw key without the scheme
            is refused. ``/metrics`` and the details of ``/health`` need it too.
        max_body_bytes: larger request bodies get 413.
        request_timeout_s: a request still unanswered after this (queueing
            included) gets 504, and its guarded work is cancelled.
        max_active_requests: chat requests worked on at once (default: one a
            CPU core, at least 2; see :func:`default_active_requests`).
        max_queue: chat requests waiting for a slot; when full, 503 with
            ``Retry-After``. Default 0: shed the excess at once, so a served
            request is not slowed by waiting (a queue trades latency for fewer
            503s).
        retry_after_s: the ``Retry-After`` of that 503.
        upstream_key: the upstream's key, only to redact it from logs and errors.
    """

    guard: GuardConfig = field(default_factory=GuardConfig)
    policy: ServerPolicy = field(default_factory=ServerPolicy)
    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0
    max_active_requests: int = field(default_factory=default_active_requests)
    max_queue: int = 0
    retry_after_s: int = 1
    upstream_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The operator's own defaults must fit the caps, or every request would be refused.
        try:
            self.policy.check_cost(self.guard, None)
        except PolicyError as exc:
            raise ConfigurationError(f"the server's default guard settings: {exc}") from None
        if self.max_active_requests < 1 or self.max_queue < 0:
            raise ConfigurationError("max_active_requests must be >= 1 and max_queue >= 0")
