"""The proxy's FastAPI app: OpenAI's chat completions API, with an uncertainty report.

Endpoints:

* ``POST /v1/chat/completions``: JSON, or SSE with ``"stream": true`` (the
  guard decides before the first chunk; the report rides on the final chunk
  as ``uncertainty``; then ``data: [DONE]``). Per-request settings in the
  body's ``uq_guard`` object (``extra_body={"uq_guard": {...}}`` from the
  openai client); the decision in the ``x-uq-guard-decision`` header.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus), ``GET
  /openapi.json`` (the chat body as this server checks it: :func:`chat_request_schema`).

Every error is OpenAI-shaped (``{"error": {"message", "type", "param",
"code"}}``) with a status that says whose fault it was: 400 malformed
request or one outside the server's policy (:mod:`uq_guard_server.policy`),
always before any upstream call; 401 bad key, 404 unknown model, 413
oversized body, 422 abstention under ``policy="raise"``, 429 upstream rate
limit, 502 upstream failure or unreachable, 503 queue full (with
``Retry-After``), 504 upstream or request timeout, 500 a bug here. Upstream
and internal failures name a request id (also the ``x-request-id`` header);
their text goes to the log only, credentials redacted. A request whose
client disconnects, or that times out, has its guarded work cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion
from prometheus_client import CollectorRegistry
from uq_guard_openai import REPORT_FIELD, SETTINGS_KEY

from uq_guard import GuardConfig
from uq_guard.perturb.lexicon import preload_wordnet
from uq_guard_server.admission import Admission, ClientGone, until_done_or_gone
from uq_guard_server.auth import authorise
from uq_guard_server.errors import APIError, as_api_error, install_error_handlers, redacted_report
from uq_guard_server.metrics import Metrics
from uq_guard_server.monitoring import add_monitoring
from uq_guard_server.schema import chat_request_schema, chat_responses
from uq_guard_server.settings import ServerSettings, default_active_requests
from uq_guard_server.streaming import completion_json, sse
from uq_guard_server.upstream import Upstream
from uq_guard_server.validation import MAX_JSON_DEPTH, check_prompt, prompt_chars, read_body

logger = logging.getLogger(__name__)

DECISION_HEADER = "x-uq-guard-decision"
REQUEST_ID_HEADER = "x-request-id"
NOTE_HEADER = "x-uq-guard-note"

__all__ = [
    "DECISION_HEADER",
    "MAX_JSON_DEPTH",
    "NOTE_HEADER",
    "REQUEST_ID_HEADER",
    "APIError",
    "ServerSettings",
    "as_api_error",
    "chat_request_schema",
    "completion_json",
    "create_app",
    "default_active_requests",
]


def create_app(upstream: Upstream, settings: ServerSettings | None = None) -> FastAPI:
    """The proxy app over ``upstream``.

    Args:
        upstream: an :class:`~uq_guard_server.upstream.OpenAIUpstream` or
            :class:`~uq_guard_server.upstream.LocalUpstream`.
        settings: see :class:`ServerSettings`.
    """
    settings = settings or ServerSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    admission = Admission(settings.max_active_requests, settings.max_queue, settings.retry_after_s)
    secrets = (settings.api_key, settings.upstream_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from uq_guard.embeddings import shared_embedder

        # Load the embedder (and WordNet, for GAAP) now, not on the first request:
        # on two busy cores WordNet alone took 23 s of the first request's time.
        guard = settings.guard
        await asyncio.to_thread(
            shared_embedder,
            guard.embedding_model,
            guard.device,
            max_tokens=guard.embedding_max_tokens,
            backend=guard.embedding_backend,
        )
        if "gaap" in guard.perturbation and guard.gaap_lexicon in ("auto", "wordnet"):
            loading = preload_wordnet()
            if loading is not None:
                await asyncio.to_thread(loading.join)
        yield
        await upstream.aclose()

    app = FastAPI(title="uq_guard proxy", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.upstream, app.state.settings, app.state.registry = upstream, settings, registry

    install_error_handlers(app)
    add_monitoring(app, upstream, settings.api_key, secrets, registry, metrics)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorise(request, settings.api_key)
        request_id = _request_id()
        try:
            names = await asyncio.wait_for(upstream.models(), settings.request_timeout_s)
        except Exception as exc:
            return as_api_error(exc, request_id, secrets).response()
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "uq-guard"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    @app.post(
        "/v1/chat/completions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": chat_request_schema(settings)}},
            }
        },
        responses=chat_responses(),
    )
    async def chat_completions(request: Request) -> Response:
        request_id = _request_id()
        started = time.monotonic()
        try:
            authorise(request, settings.api_key)
            body = await read_body(
                request, settings.max_body_bytes, settings.policy.max_request_tokens
            )
            stream = bool(body.pop("stream", False))
            stream_options = body.pop("stream_options", None) or {}
            overrides = dict(body.pop(SETTINGS_KEY, None) or {})
            reply_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            config, notes = settings.policy.request_config(
                settings.guard, overrides, reply_tokens, prompt_chars(body["messages"])
            )
            if config is not None:
                check_prompt(body["messages"])
            # Waiting in the queue counts against the timeout and ends with the client.
            remaining = settings.request_timeout_s - (time.monotonic() - started)
            completion = await until_done_or_gone(
                answer(body, config), request, max(0.0, remaining)
            )
        except ClientGone:
            logger.info("request %s: the client disconnected; its work was cancelled", request_id)
            metrics.observe_error("client_disconnected")
            return Response(status_code=499)
        except Exception as exc:
            error = as_api_error(exc, request_id, secrets)
            metrics.observe_error(error.type)
            error.headers.setdefault(REQUEST_ID_HEADER, request_id)
            return error.response()
        report = getattr(completion, REPORT_FIELD, None)
        metrics.observe_report(report)
        headers = {
            DECISION_HEADER: report.decision if report is not None else "unguarded",
            REQUEST_ID_HEADER: request_id,
        }
        if notes:
            headers[NOTE_HEADER] = "; ".join(notes)
        data = completion_json(completion)
        if REPORT_FIELD in data:
            data[REPORT_FIELD] = redacted_report(data[REPORT_FIELD], secrets, request_id)
        if stream:
            return StreamingResponse(
                sse(data, bool(stream_options.get("include_usage"))),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        return JSONResponse(data, headers=headers)

    async def answer(body: dict[str, Any], config: GuardConfig | None) -> ChatCompletion:
        async with admission.slot():
            if body["model"] not in await upstream.models():
                raise APIError(
                    404,
                    f"the model '{body['model']}' does not exist here",
                    param="model",
                    code="model_not_found",
                )
            return await upstream.complete(
                body, config, max_calls=settings.policy.max_upstream_calls
            )

    return app


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"
