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
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
from uq_guard._messages import last_user_index
from uq_guard.perturb.lexicon import preload_wordnet
from uq_guard_server.metrics import Metrics
from uq_guard_server.policy import SDK_FIELDS, PolicyError, ServerPolicy
from uq_guard_server.redact import redact
from uq_guard_server.upstream import Upstream, UpstreamCallCapReached

logger = logging.getLogger(__name__)

DECISION_HEADER = "x-uq-guard-decision"
REQUEST_ID_HEADER = "x-request-id"
NOTE_HEADER = "x-uq-guard-note"
T = TypeVar("T")


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


_UPSTREAM_FAILURES = (
    openai.APIError,
    GenerationError,
    MalformedResponseError,
    DegradedResultError,
    UpstreamCallCapReached,
    TimeoutError,
    # the SDK lets a body that is not JSON through as the decoder's error (an
    # unguarded call, a model list); the request's own body is parsed before any call
    json.JSONDecodeError,
)


def as_api_error(
    exc: BaseException, request_id: str | None = None, secrets: Iterable[str | None] = ()
) -> APIError:
    """The OpenAI-shaped error a client gets for ``exc``.

    Upstream failures are answered with their status and a generic message
    naming ``request_id``; the upstream's own text goes to the server log
    only, credentials redacted (``secrets``: keys to hide by value).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GenerationError) and exc.cause is not None:
        return as_api_error(exc.cause, request_id, secrets)
    if isinstance(exc, PolicyError):
        return APIError(400, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, ConfigurationError):
        logger.warning("request %s: configuration error: %s", request_id, redact(str(exc), secrets))
        return APIError(400, "invalid uq_guard settings", param=SETTINGS_KEY)
    if isinstance(exc, UncertaintyAbstention):
        report = _redacted_report(exc.report.model_dump(mode="json"), secrets, request_id)
        return APIError(
            422,
            redact(str(exc), secrets),
            type="uncertainty_abstention",
            code="low_confidence",
            extra={REPORT_FIELD: report},
        )
    ref = f" (request id {request_id})" if request_id else ""
    if isinstance(exc, _UPSTREAM_FAILURES):
        logger.warning("request %s: upstream failure: %s", request_id, redact(repr(exc), secrets))
    if isinstance(exc, DegradedResultError):
        return APIError(
            502,
            f"strict mode: the uncertainty estimate was degraded{ref}",
            type="upstream_error",
            code="degraded_result",
        )
    if isinstance(exc, UpstreamCallCapReached):
        return APIError(
            502,
            f"the request reached the server's cap on upstream calls{ref}",
            type="upstream_error",
            code="upstream_call_cap",
        )
    if isinstance(exc, openai.APIStatusError):
        return _upstream_status_error(exc, ref)
    if isinstance(exc, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return APIError(504, f"the upstream timed out{ref}", type="upstream_error", code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return APIError(
            502, f"the upstream is unreachable{ref}", type="upstream_error", code="unreachable"
        )
    if isinstance(
        exc,
        (
            MalformedResponseError,
            openai.APIResponseValidationError,
            GenerationError,
            json.JSONDecodeError,
        ),
    ):
        return APIError(
            502,
            f"the upstream's answer was unusable{ref}",
            type="upstream_error",
            code="bad_response",
        )
    logger.error(
        "request %s: unexpected error: %s", request_id, redact(repr(exc), secrets), exc_info=exc
    )
    return APIError(500, f"internal error{ref}", type="server_error")


def _upstream_status_error(exc: openai.APIStatusError, ref: str) -> APIError:
    status = exc.status_code
    message = f"the upstream answered {status}{ref}"
    if status == 429:
        retry_after = exc.response.headers.get("retry-after")
        headers = {"retry-after": retry_after} if retry_after else None
        return APIError(429, message, type="rate_limit_error", code="rate_limited", headers=headers)
    if status in (400, 404, 409, 413, 422):  # the request itself was at fault
        return APIError(status, message, code="upstream_rejected")
    return APIError(502, message, type="upstream_error", code=f"upstream_{status}")


# An upstream's own words enter a report's notes through these exception texts:
# the SDK's "Error code: 500 - <the upstream's body>" and a body that is not a
# chat completion. They are cut to the end of the note (a body may hold "; ").
_UPSTREAM_TEXT = (
    (re.compile(r"Error code: (\d{3}) - .*", re.DOTALL), r"the upstream answered \1"),
    (re.compile(r"(the server's response is not a chat completion): .*", re.DOTALL), r"\1"),
)


def _for_client(text: str, secrets: Iterable[str | None]) -> str:
    """A report's note as a client sees it: the upstream's text cut, credentials redacted."""
    for pattern, replacement in _UPSTREAM_TEXT:
        text = pattern.sub(replacement, text)
    return redact(text, secrets)


def _redacted_report(
    report: dict[str, Any], secrets: Iterable[str | None], request_id: str | None = None
) -> dict[str, Any]:
    """``report`` (a dumped UncertaintyReport) as a client may see it.

    Notes and degraded reasons can quote an upstream's error text (a failed
    sample, paraphrase or fallback call): that text goes to the log, the
    client keeps the reason without it.
    """
    for key in ("degraded_reasons", "notes"):
        texts = report.get(key)
        if not isinstance(texts, list):
            continue
        shown = [_for_client(t, secrets) if isinstance(t, str) else t for t in texts]
        if shown != texts:
            full = "; ".join(t for t in texts if isinstance(t, str))
            logger.warning("request %s: %s: %s", request_id, key, redact(full, secrets))
        report[key] = shown
    if isinstance(report.get("fallback"), dict):
        report["fallback"] = _redacted_report(report["fallback"], secrets, request_id)
    return report


MAX_JSON_DEPTH = 32
"""Nesting deeper than this in a request body is refused (a chat request needs about 6)."""

_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_PARAMS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs")
_TOKEN_CAP_PARAMS = ("max_tokens", "max_completion_tokens")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:120]
        raise APIError(400, f"the request body is not valid JSON: {reason}") from None


def _check_tree(body: Any) -> None:
    """Refuse nesting over :data:`MAX_JSON_DEPTH` and strings that are not valid Unicode."""
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        raise APIError(400, "the request body holds a string that is not valid Unicode") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    400: "malformed, or outside the server's policy (before any upstream call)",
    401: "missing or wrong client key",
    404: "unknown model",
    413: "body over the server's limit",
    422: "abstention under policy='raise' (the report rides on the error)",
    429: "the upstream is rate-limiting (its Retry-After is passed on)",
    502: "the upstream failed or is unreachable",
    503: "the server is busy (Retry-After)",
    504: "the upstream or the request timed out",
}


def chat_request_schema(settings: ServerSettings) -> dict[str, Any]:
    """The JSON schema of a chat request as this server checks it (for ``/openapi.json``).

    Documentation only: :func:`_validated` and the policy do the checking.
    It states the types the server enforces, the server's caps, and the
    ``uq_guard`` settings this server allows, with the operator's values as
    defaults. Other OpenAI fields are passed on to the upstream.
    """
    try:
        guard_fields = GuardConfig.model_json_schema()["properties"]
    except Exception:  # a field pydantic cannot describe: document the names only
        guard_fields = {}
    allowed: dict[str, Any] = {}
    for name in sorted(settings.policy.allowed_settings):
        if name == "enabled":
            allowed[name] = {"type": "boolean", "description": "false skips the guard"}
            continue
        described = {k: v for k, v in guard_fields.get(name, {}).items() if k != "title"}
        value = getattr(settings.guard, name, None)
        if isinstance(value, (bool, int, float, str)):
            described["default"] = value
        allowed[name] = described
    cap = settings.policy.max_request_tokens
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    }
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": text_part},
                    {"type": "null"},
                ]
            },
            "name": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": message,
                "contains": {"properties": {"role": {"enum": ["user"]}}},
                "description": "the last user message is the prompt the guard perturbs "
                "(a request with the guard off may have none)",
            },
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
                "additionalProperties": False,
                "description": 'only with "stream": true',
            },
            **{name: {"type": "number"} for name in _NUMBER_PARAMS},
            "n": {"type": "integer", "enum": [1], "description": "one choice per request"},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": cap},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": cap},
            "seed": {"type": "integer"},
            "top_logprobs": {"type": "integer"},
            "logprobs": {"type": "boolean"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            SETTINGS_KEY: {
                "type": "object",
                "properties": allowed,
                "additionalProperties": False,
                "description": "per-request guard settings this server allows, within its caps",
            },
        },
        "dependentSchemas": {
            "stream_options": {"properties": {"stream": {"enum": [True]}}, "required": ["stream"]}
        },
        "description": "OpenAI's chat completions request; "
        f"{', '.join(SDK_FIELDS)} are refused; other fields go to the upstream",
    }


def _chat_responses() -> dict[int | str, dict[str, Any]]:
    errors: dict[int | str, dict[str, Any]] = {
        status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for status, text in _ERRORS.items()
    }
    errors[200] = {
        "description": "a chat.completion with its `uncertainty` report (SSE when streaming)",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
    return errors


def _validated(body: Any, max_request_tokens: int) -> dict[str, Any]:
    """``body`` when it is a well-formed chat request; an :class:`APIError` (400) if not."""
    _check_tree(body)
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise APIError(400, "'model' is required and must be a string", param="model")
    for name in SDK_FIELDS:
        if name in body:
            raise APIError(
                400,
                f"'{name}' is not accepted: the server's operator controls the upstream call",
                param=name,
                code="forbidden_parameter",
            )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(
                400, f"messages[{index}] must be an object with a 'role'", param="messages"
            )
        content = message.get("content")
        if not isinstance(content, (str, list, type(None))):
            raise APIError(
                400, f"messages[{index}].content must be a string or a list", param="messages"
            )
        for part in content if isinstance(content, list) else ():
            # the guard reads the text parts (a part without a type is text)
            if not isinstance(part, dict) or (
                part.get("type", "text") == "text" and not isinstance(part.get("text"), str)
            ):
                raise APIError(
                    400,
                    f"messages[{index}].content must hold parts like "
                    '{"type": "text", "text": "..."}',
                    param="messages",
                )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise APIError(400, "'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None:
        if not body.get("stream"):
            raise APIError(400, "'stream_options' needs \"stream\": true", param="stream_options")
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise APIError(
                400,
                "'stream_options' must be an object like {\"include_usage\": true}",
                param="stream_options",
            )
    for name in _NUMBER_PARAMS:
        if body.get(name) is not None and not _is_number(body[name]):
            raise APIError(400, f"'{name}' must be a number", param=name)
    for name in _INTEGER_PARAMS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise APIError(400, f"'{name}' must be an integer", param=name)
    for name in _TOKEN_CAP_PARAMS:
        value = body.get(name)
        if value is not None and not 1 <= value <= max_request_tokens:
            raise APIError(
                400,
                f"'{name}' must be between 1 and the server's cap "
                f"max_request_tokens={max_request_tokens}",
                param=name,
                code="over_server_cap" if value > 0 else None,
            )
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise APIError(400, "'logprobs' must be a boolean", param="logprobs")
    n = body.get("n")
    if n is not None and n != 1:
        raise APIError(400, "the uq_guard proxy returns one choice: 'n' must be 1", param="n")
    settings = body.get(SETTINGS_KEY)
    if settings is not None and not isinstance(settings, dict):
        raise APIError(400, f"'{SETTINGS_KEY}' must be an object", param=SETTINGS_KEY)
    return body


async def _read_body(request: Request, limit: int, max_request_tokens: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is over {limit} bytes", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return _validated(_parse_json(b"".join(chunks)), max_request_tokens)


class _Admission:
    """At most ``active`` chat requests at work and ``queue`` waiting; beyond, 503."""

    def __init__(self, active: int, queue: int, retry_after_s: int) -> None:
        self._slots = asyncio.Semaphore(active)
        self._limit = active + queue
        self._admitted = 0
        self._retry_after = str(retry_after_s)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._admitted >= self._limit:
            raise APIError(
                503,
                "the server is busy: too many requests in progress; retry later",
                type="server_overloaded",
                code="queue_full",
                headers={"retry-after": self._retry_after},
            )
        self._admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _until_done_or_gone(work: Awaitable[T], request: Request, timeout_s: float) -> T:
    """``work``'s result, cancelling it when the client disconnects or ``timeout_s`` passes.

    Raises:
        ClientGone: the client disconnected (the work was cancelled).
        APIError: 504, ``timeout_s`` passed (the work was cancelled).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        deadline = time.monotonic() + timeout_s
        done, _ = await asyncio.wait(
            {task, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if watcher in done and task not in done:
            if watcher.exception() is None:
                raise ClientGone
            # The server could not tell whether the client is there: finish the work.
            logger.warning("watching for a disconnect failed: %r", watcher.exception())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        if task in done:
            return task.result()
        raise APIError(
            504,
            "no answer within the server's request timeout",
            type="upstream_error",
            code="timeout",
        )
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


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
    admission = _Admission(settings.max_active_requests, settings.max_queue, settings.retry_after_s)
    secrets = (settings.api_key, settings.upstream_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from uq_guard.embeddings import shared_embedder

        # Load the embedder (and WordNet, for GAAP) now, not on the first request:
        # on two busy cores WordNet alone took 23 s of the first request's time.
        await asyncio.to_thread(
            shared_embedder, settings.guard.embedding_model, settings.guard.device
        )
        guard = settings.guard
        if "gaap" in guard.perturbation and guard.gaap_lexicon in ("auto", "wordnet"):
            loading = preload_wordnet()
            if loading is not None:
                await asyncio.to_thread(loading.join)
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
            response = as_api_error(exc, secrets=secrets).response()
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

    def key_ok(request: Request) -> bool:
        if settings.api_key is None:
            return True
        # RFC 6750: the scheme is case-insensitive; a raw key without it is refused.
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), settings.api_key.encode())

    def authorise(request: Request) -> None:
        if not key_ok(request):
            raise APIError(401, "invalid API key", code="invalid_api_key")

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        # Liveness stays open; what the server talks to is for key holders only.
        if not key_ok(request):
            return {"status": "ok"}
        return {"status": "ok", "upstream": redact(upstream.description, secrets)}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorise(request)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorise(request)
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
        responses=_chat_responses(),
    )
    async def chat_completions(request: Request) -> Response:
        request_id = _request_id()
        started = time.monotonic()
        try:
            authorise(request)
            body = await _read_body(
                request, settings.max_body_bytes, settings.policy.max_request_tokens
            )
            stream = bool(body.pop("stream", False))
            stream_options = body.pop("stream_options", None) or {}
            overrides = dict(body.pop(SETTINGS_KEY, None) or {})
            reply_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            config, notes = settings.policy.request_config(
                settings.guard, overrides, reply_tokens, _prompt_chars(body["messages"])
            )
            if config is not None:
                _check_prompt(body["messages"])
            # Waiting in the queue counts against the timeout and ends with the client.
            remaining = settings.request_timeout_s - (time.monotonic() - started)
            completion = await _until_done_or_gone(
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
            data[REPORT_FIELD] = _redacted_report(data[REPORT_FIELD], secrets, request_id)
        if stream:
            return StreamingResponse(
                _sse(data, bool(stream_options.get("include_usage"))),
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


def _check_prompt(messages: list[dict[str, Any]]) -> None:
    """Refuse a guarded request with no user message: the guard has no prompt to perturb."""
    try:
        last_user_index(messages)
    except ConfigurationError as exc:
        raise APIError(400, str(exc), param="messages") from None


def _prompt_chars(messages: list[dict[str, Any]]) -> int:
    """Characters of text in ``messages`` (strings and text parts)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                total += len(text) if isinstance(text, str) else 0
    return total


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def completion_json(completion: ChatCompletion) -> dict[str, Any]:
    """The JSON body of a completion, the report in full under ``uncertainty``."""
    data = completion.model_dump(mode="json", exclude_none=True, exclude={REPORT_FIELD})
    report = getattr(completion, REPORT_FIELD, None)
    if report is not None:
        data[REPORT_FIELD] = report.model_dump(mode="json")
    return data


_PIECES = re.compile(r"\S+\s*|\s+")


async def _sse(data: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A decided completion's JSON as ``chat.completion.chunk`` events, report on the last."""
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
