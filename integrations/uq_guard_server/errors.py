"""Errors in OpenAI's shape: :class:`APIError`, what a client gets for an exception, handlers.

Upstream and internal failures name a request id; their text goes to the log
only, credentials redacted, and so does an upstream's text quoted in a
report's notes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from uq_guard_openai import REPORT_FIELD, SETTINGS_KEY, MalformedResponseError

from uq_guard._exceptions import (
    ConfigurationError,
    DegradedResultError,
    GenerationError,
    UncertaintyAbstention,
)
from uq_guard_server.policy import PolicyError
from uq_guard_server.redact import redact
from uq_guard_server.upstream import UpstreamCallCapReached

# the proxy's log lines carry one name, the app's, whichever module writes them
logger = logging.getLogger("uq_guard_server.app")


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
        report = redacted_report(exc.report.model_dump(mode="json"), secrets, request_id)
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
    if _timed_out(exc):
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


def redacted_report(
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
        report["fallback"] = redacted_report(report["fallback"], secrets, request_id)
    return report


def install_error_handlers(app: FastAPI) -> None:
    """Answer Starlette's HTTP errors (404, 405...) and :class:`APIError` in OpenAI's shape."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=kind).response()

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a timeout, not a refused or reset connection dressed as one.

    The SDK's aiohttp transport (what the proxy uses when aiohttp is installed)
    reports every failed connection as a connect timeout; the refusal itself
    is further down the chain of causes.
    """
    if not isinstance(exc, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return False
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ConnectionError):
            return False
        cause = cause.__cause__ or cause.__context__
    return True
