"""The proxy's FastAPI app: OpenAI's chat completions API, with an uncertainty report.

Endpoints:

* ``POST /v1/chat/completions``: JSON, or SSE with ``"stream": true`` (the
  guard decides before the first chunk; the report rides on the final chunk
  as ``uncertainty``; then ``data: [DONE]``). Per-request settings in the
  body's ``uq_guard`` object (``extra_body={"uq_guard": {...}}`` from the
  openai client); the decision in the ``x-uq-guard-decision`` header.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus).

Every error is OpenAI-shaped (``{"error": {"message", "type", "param",
"code"}}``) with a status that says whose fault it was: 400 malformed
request, 401 bad key, 404 unknown model, 413 oversized body, 422 abstention
under ``policy="raise"``, 429 upstream rate limit, 502 upstream failure or
unreachable, 504 upstream timeout, 500 a bug here (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from uq_guard_openai import REPORT_FIELD, SETTINGS_KEY, MalformedResponseError

from uq_guard import GuardConfig
from uq_guard._exceptions import (
    ConfigurationError,
    DegradedResultError,
    GenerationError,
    UncertaintyAbstention,
)
from uq_guard_server.metrics import Metrics
from uq_guard_server.upstream import Upstream

logger = logging.getLogger(__name__)

DECISION_HEADER = "x-uq-guard-decision"


@dataclass
class ServerSettings:
    """How the proxy runs.

    Attributes:
        guard: default settings of every guarded call (a request's
            ``uq_guard`` object overrides them).
        api_key: when set, clients must send ``Authorization: Bearer <key>``.
        max_body_bytes: larger request bodies get 413.
        request_timeout_s: a request still unanswered after this gets 504.
    """

    guard: GuardConfig = field(default_factory=GuardConfig)
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
            **self.extra,
        }
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def as_api_error(exc: BaseException) -> APIError:
    """The OpenAI-shaped error a client gets for ``exc``."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GenerationError) and exc.cause is not None:
        return as_api_error(exc.cause)
    if isinstance(exc, ConfigurationError):
        return APIError(400, str(exc), param=SETTINGS_KEY)
    if isinstance(exc, UncertaintyAbstention):
        return APIError(
            422,
            str(exc),
            type="uncertainty_abstention",
            code="low_confidence",
            extra={REPORT_FIELD: exc.report.model_dump(mode="json")},
        )
    if isinstance(exc, DegradedResultError):
        return APIError(502, f"strict mode: {exc}", type="upstream_error", code="degraded_result")
    if isinstance(exc, openai.APIStatusError):
        return _upstream_status_error(exc)
    if isinstance(exc, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return APIError(
            504, f"the upstream timed out: {exc}", type="upstream_error", code="timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        return APIError(
            502, f"the upstream is unreachable: {exc}", type="upstream_error", code="unreachable"
        )
    if isinstance(
        exc, (MalformedResponseError, openai.APIResponseValidationError, GenerationError)
    ):
        return APIError(
            502,
            f"the upstream's answer was unusable: {exc}",
            type="upstream_error",
            code="bad_response",
        )
    logger.exception("unexpected error", exc_info=exc)
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error")


def _upstream_status_error(exc: openai.APIStatusError) -> APIError:
    status = exc.status_code
    message = f"upstream answered {status}: {exc.message}"
    if status == 429:
        retry_after = exc.response.headers.get("retry-after")
        headers = {"retry-after": retry_after} if retry_after else None
        return APIError(429, message, type="rate_limit_error", code="rate_limited", headers=headers)
    if status in (400, 404, 409, 413, 422):  # the request itself was at fault
        return APIError(status, message, code="upstream_rejected")
    return APIError(502, message, type="upstream_error", code=f"upstream_{status}")


def _validated(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise APIError(400, "'model' is required and must be a string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(
                400, f"messages[{index}] must be an object with a 'role'", param="messages"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise APIError(400, "'stream' must be a boolean", param="stream")
    n = body.get("n")
    if n is not None and n != 1:
        raise APIError(400, "the uq_guard proxy returns one choice: 'n' must be 1", param="n")
    settings = body.get(SETTINGS_KEY)
    if settings is not None and not isinstance(settings, dict):
        raise APIError(400, f"'{SETTINGS_KEY}' must be an object", param=SETTINGS_KEY)
    return body


async def _read_body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is over {limit} bytes", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    try:
        return _validated(json.loads(b"".join(chunks)))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None


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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from uq_guard.embeddings import shared_embedder

        # Load the embedder now, not on the first request.
        await asyncio.to_thread(
            shared_embedder, settings.guard.embedding_model, settings.guard.device
        )
        yield
        await upstream.aclose()

    app = FastAPI(title="uq_guard proxy", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.upstream, app.state.settings, app.state.registry = upstream, settings, registry

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:  # never let one request take the server down
            response = as_api_error(exc).response()
        metrics.observe_request(
            request.url.path, response.status_code, time.perf_counter() - started
        )
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=kind).response()

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    def authorise(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise APIError(401, "invalid API key", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "upstream": upstream.description}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorise(request)
        try:
            names = await asyncio.wait_for(upstream.models(), settings.request_timeout_s)
        except Exception as exc:
            return as_api_error(exc).response()
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "uq-guard"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            authorise(request)
            body = await _read_body(request, settings.max_body_bytes)
            stream = bool(body.pop("stream", False))
            stream_options = body.pop("stream_options", None) or {}
            overrides = dict(body.pop(SETTINGS_KEY, None) or {})
            enabled = overrides.pop("enabled", True)
            config = GuardConfig.build(settings.guard, **overrides) if enabled else None
            if body["model"] not in await asyncio.wait_for(
                upstream.models(), settings.request_timeout_s
            ):
                raise APIError(
                    404,
                    f"the model '{body['model']}' does not exist here",
                    param="model",
                    code="model_not_found",
                )
            completion = await asyncio.wait_for(
                upstream.complete(body, config), settings.request_timeout_s
            )
        except Exception as exc:
            error = as_api_error(exc)
            metrics.observe_error(error.type)
            return error.response()
        report = getattr(completion, REPORT_FIELD, None)
        metrics.observe_report(report)
        headers = {DECISION_HEADER: report.decision if report is not None else "unguarded"}
        if stream:
            return StreamingResponse(
                _sse(completion, bool(stream_options.get("include_usage"))),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        return JSONResponse(completion_json(completion), headers=headers)

    return app


def completion_json(completion: ChatCompletion) -> dict[str, Any]:
    """The JSON body of a completion, the report in full under ``uncertainty``."""
    data = completion.model_dump(mode="json", exclude_none=True, exclude={REPORT_FIELD})
    report = getattr(completion, REPORT_FIELD, None)
    if report is not None:
        data[REPORT_FIELD] = report.model_dump(mode="json")
    return data


_PIECES = re.compile(r"\S+\s*|\s+")


async def _sse(completion: ChatCompletion, include_usage: bool) -> AsyncIterator[bytes]:
    """The decided completion as ``chat.completion.chunk`` events, report on the last."""
    data = completion_json(completion)
    choice = data["choices"][0] if data.get("choices") else {"message": {}, "index": 0}
    message = choice.get("message", {})
    base = {
        "id": data.get("id"),
        "object": "chat.completion.chunk",
        "created": data.get("created"),
        "model": data.get("model"),
    }

    def event(delta: dict[str, Any], **more: Any) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **more}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    for piece in _PIECES.findall(message.get("content") or ""):
        yield event({"content": piece})
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield event({"tool_calls": calls})
    final = {
        **base,
        "choices": [
            {"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}
        ],
    }
    if REPORT_FIELD in data:
        final[REPORT_FIELD] = data[REPORT_FIELD]
    yield f"data: {json.dumps(final)}\n\n".encode()
    if include_usage and "usage" in data:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': data['usage']})}\n\n".encode()
    yield b"data: [DONE]\n\n"
