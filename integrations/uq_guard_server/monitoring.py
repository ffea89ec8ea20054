"""What operators watch: the request counter, ``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from uq_guard_server.auth import authorise, key_ok
from uq_guard_server.errors import as_api_error
from uq_guard_server.metrics import Metrics
from uq_guard_server.redact import redact
from uq_guard_server.upstream import Upstream


def add_monitoring(
    app: FastAPI,
    upstream: Upstream,
    api_key: str | None,
    secrets: tuple[str | None, ...],
    registry: CollectorRegistry,
    metrics: Metrics,
) -> None:
    """Count every request (an error escaping a handler is answered as a 500), add the routes.

    ``/health`` stays open for liveness; the upstream it names, and ``/metrics``,
    are for holders of ``api_key`` only.
    """

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:  # never let one request take the server down
            response = as_api_error(exc, secrets=secrets).response()
        metrics.observe_request(
            request.url.path, response.status_code, time.perf_counter() - started
        )
        return response

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        # Liveness stays open; what the server talks to is for key holders only.
        if not key_ok(request, api_key):
            return {"status": "ok"}
        return {"status": "ok", "upstream": redact(upstream.description, secrets)}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorise(request, api_key)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
