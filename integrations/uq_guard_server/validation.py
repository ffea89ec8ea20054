"""A chat request's body: read under the size cap, parsed, and checked before any upstream call.

Every refusal is an :class:`~uq_guard_server.errors.APIError` (400, or 413
for an oversized body).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from uq_guard_openai import SETTINGS_KEY

from uq_guard._exceptions import ConfigurationError
from uq_guard._messages import last_user_index
from uq_guard_server.errors import APIError
from uq_guard_server.policy import SDK_FIELDS

MAX_JSON_DEPTH = 32
"""Nesting deeper than this in a request body is refused (a chat request needs about 6)."""

NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
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
    for name in NUMBER_PARAMS:
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


async def read_body(request: Request, limit: int, max_request_tokens: int) -> dict[str, Any]:
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


def check_prompt(messages: list[dict[str, Any]]) -> None:
    """Refuse a guarded request with no user message: the guard has no prompt to perturb."""
    try:
        last_user_index(messages)
    except ConfigurationError as exc:
        raise APIError(400, str(exc), param="messages") from None


def prompt_chars(messages: list[dict[str, Any]]) -> int:
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
