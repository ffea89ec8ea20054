"""The chat request and its answers as ``/openapi.json`` documents them (documentation only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uq_guard_openai import SETTINGS_KEY

from uq_guard import GuardConfig
from uq_guard_server.policy import SDK_FIELDS
from uq_guard_server.validation import NUMBER_PARAMS

if TYPE_CHECKING:
    from uq_guard_server.settings import ServerSettings


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

    Documentation only: :func:`~uq_guard_server.validation.read_body` and the
    policy do the checking. It states the types the server enforces, the
    server's caps, and the ``uq_guard`` settings this server allows, with the
    operator's values as defaults. Other OpenAI fields are passed on to the
    upstream.
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
            **{name: {"type": "number"} for name in NUMBER_PARAMS},
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


def chat_responses() -> dict[int | str, dict[str, Any]]:
    errors: dict[int | str, dict[str, Any]] = {
        status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for status, text in _ERRORS.items()
    }
    errors[200] = {
        "description": "a chat.completion with its `uncertainty` report (SSE when streaming)",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
    return errors
