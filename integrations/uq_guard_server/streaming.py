"""A decided completion as the client gets it: its JSON body, or that body as SSE chunks."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from openai.types.chat import ChatCompletion
from uq_guard_openai import REPORT_FIELD


def completion_json(completion: ChatCompletion) -> dict[str, Any]:
    """The JSON body of a completion, the report in full under ``uncertainty``."""
    data = completion.model_dump(mode="json", exclude_none=True, exclude={REPORT_FIELD})
    report = getattr(completion, REPORT_FIELD, None)
    if report is not None:
        data[REPORT_FIELD] = report.model_dump(mode="json")
    return data


_PIECES = re.compile(r"\S+\s*|\s+")


async def sse(data: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
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
