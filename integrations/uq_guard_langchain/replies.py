"""The reply a ``GuardedChatModel`` returns: the chosen native message, carrying the report.

The message is the inner model's own ``AIMessage`` (or the fallback's) when
the policy kept one, with the report in ``response_metadata["uq_guard"]``
and the usage of every call summed; streamed, it is cut into chunks with
the report, usage and tool calls on the last.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from uq_guard.engine import GuardResult
from uq_guard.report import UncertaintyReport

__all__ = ["METADATA_KEY", "annotated", "chosen_message", "stream_chunks"]

METADATA_KEY = "uq_guard"
"""Where the report lands: ``message.response_metadata["uq_guard"]``."""

_PIECES = re.compile(r"\s*\S+\s*|\s+")


def chosen_message(result: GuardResult) -> AIMessage:
    """The native message for what the policy chose."""
    decision = result.report.decision
    source = (
        result.reply
        if decision == "answer"
        else (result.fallback_reply if decision == "fallback" else None)
    )
    if source is not None and source.raw and isinstance(source.raw[0], AIMessage):
        return source.raw[0]
    return AIMessage(content=result.text)


def annotated(
    message: AIMessage, report: UncertaintyReport, result: GuardResult | None
) -> AIMessage:
    """A copy of ``message`` carrying the report and the summed usage of all calls."""
    update: dict[str, Any] = {
        "response_metadata": {**message.response_metadata, METADATA_KEY: report.model_dump()},
    }
    if result is not None and result.usage.model_calls:
        update["usage_metadata"] = {
            "input_tokens": result.usage.prompt_tokens,
            "output_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        }
    return message.model_copy(update=update)


def stream_chunks(message: AIMessage) -> list[ChatGenerationChunk]:
    """The message as stream chunks: text piece by piece, tool calls and report on the last."""
    text = message.content if isinstance(message.content, str) else message.text
    pieces = _PIECES.findall(text) if text else []
    chunks = [
        ChatGenerationChunk(message=AIMessageChunk(content=piece, id=message.id))
        for piece in pieces
    ]
    final = AIMessageChunk(
        content="" if pieces else (message.content if not isinstance(message.content, str) else ""),
        id=message.id,
        chunk_position="last",
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
        tool_call_chunks=[
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c.get("id"), index=i)
            for i, c in enumerate(message.tool_calls)
        ],
    )
    chunks.append(ChatGenerationChunk(message=final))
    return chunks
