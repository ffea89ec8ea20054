"""Guarded streaming: a decided ``ChatCompletion`` replayed as ``ChatCompletionChunk`` objects.

``create(..., stream=True)`` on a wrapped client runs the whole guarded call
first, then streams what the policy chose, so no text reaches the user that a
policy then withdraws. The contract is the proxy's (``uq-guard serve``):

1. a chunk with ``delta.role="assistant"`` and empty content;
2. the chosen text, a word (with its trailing space) per chunk; a refusal as
   ``delta.refusal`` pieces; tool calls whole, in one chunk;
3. a final chunk with an empty delta, the ``finish_reason``, and the report
   as ``chunk.uncertainty`` (also in ``chunk.model_extra``);
4. with ``stream_options={"include_usage": True}``, a chunk with no choices
   and the ``usage`` summed over every call the guard made.

What differs from an unguarded stream: the first chunk comes when the guarded
call is done (``create`` returns then, and raises what a non-streamed
guarded call raises: the SDK's error for a failed reply,
``UncertaintyAbstention`` under ``policy="raise"``); the chunks are not the
model's own tokens; ``logprobs`` are not streamed; ``stream.response`` is a
stand-in HTTP response (status 200, no body), there for code that closes it.
The report is also ``stream.uncertainty``, known before the first chunk.

The SDK's event helper, ``client.chat.completions.stream(...)``, runs on
these chunks too: its ``get_final_completion()`` drops extra fields, so the
report is read from the last ``chunk`` event (``event.chunk.uncertainty``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from uq_guard.report import UncertaintyReport
from uq_guard_openai.completion import REPORT_FIELD

_PIECES = re.compile(r"\S+\s*|\s+")


def completion_chunks(
    completion: ChatCompletion, *, include_usage: bool = False
) -> list[ChatCompletionChunk]:
    """The chunks that stream ``completion``'s first choice, the report on the finishing one.

    Args:
        completion: a decided completion (its report, if any, in ``uncertainty``).
        include_usage: end with a usage chunk (``stream_options={"include_usage": True}``).

    Returns:
        The chunks in order; joining their ``delta.content`` gives the choice's content.
    """
    base: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    for name in ("system_fingerprint", "service_tier"):
        if getattr(completion, name, None) is not None:
            base[name] = getattr(completion, name)
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice is not None else None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> ChatCompletionChunk:
        # construct, as the SDK parses a server's chunks: lenient with new fields and kinds
        return ChatCompletionChunk.construct(
            **base,
            choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        )

    chunks = [chunk({"role": "assistant", "content": ""})]
    if message is not None:
        content = message.content if isinstance(message.content, str) else ""
        chunks += [chunk({"content": piece}) for piece in _PIECES.findall(content)]
        refusal = getattr(message, "refusal", None)
        if isinstance(refusal, str):
            chunks += [chunk({"refusal": piece}) for piece in _PIECES.findall(refusal)]
        if message.tool_calls:
            calls = [
                {"index": i, **call.model_dump(exclude_none=True)}
                for i, call in enumerate(message.tool_calls)
            ]
            chunks.append(chunk({"tool_calls": calls}))
    finish_reason = choice.finish_reason if choice is not None else "stop"
    final = chunk({}, finish_reason or "stop")
    report = getattr(completion, REPORT_FIELD, None)
    if report is not None:
        setattr(final, REPORT_FIELD, report)
    chunks.append(final)
    if include_usage and completion.usage is not None:
        chunks.append(
            ChatCompletionChunk.construct(
                **base, choices=[], usage=completion.usage.model_dump(exclude_none=True)
            )
        )
    return chunks


def _http_module(client: Any) -> ModuleType:
    """The HTTP library the client's SDK runs on (``httpx``, or a fork of it)."""
    for cls in type(getattr(client, "_client", None)).__mro__:
        root = cls.__module__.partition(".")[0]
        if root.startswith("httpx") and root in sys.modules:
            return sys.modules[root]
    import httpx

    return httpx


def stand_in_response(client: Any, completion: ChatCompletion) -> Any:
    """An HTTP 200 with no body, for ``stream.response``: the guarded call made many requests."""
    http = _http_module(client)
    headers = {"content-type": "text/event-stream"}
    request_id = getattr(completion, "_request_id", None)
    if isinstance(request_id, str):
        headers["x-request-id"] = request_id
    url = f"{str(client.base_url).rstrip('/')}/chat/completions"
    return http.Response(200, headers=headers, request=http.Request("POST", url))


def _reports(chunks: list[ChatCompletionChunk]) -> UncertaintyReport | None:
    for item in reversed(chunks):
        report = getattr(item, REPORT_FIELD, None)
        if report is not None:
            return report
    return None


class _Replayed:
    """The guarded chunks, replayed: what the sync and async streams share.

    Not the SDK's ``__init__``: there is no HTTP body to decode. The SDK's own
    context-manager methods call :meth:`close`, which each stream overrides.
    """

    def __init__(self, chunks: list[ChatCompletionChunk], *, response: Any) -> None:
        self.response = response
        self.uncertainty = _reports(chunks)
        self._iterator = self._replay(chunks)  # type: ignore[attr-defined]


class GuardedStream(_Replayed, openai.Stream[ChatCompletionChunk]):
    """What a wrapped client's ``create(..., stream=True)`` returns: an ``openai.Stream``.

    Iterate it, use it as a context manager, ``close()`` it, as the SDK's
    own. See the module docstring for what it streams and what differs.

    Attributes:
        uncertainty: the report, known before the first chunk (also on the finishing chunk).
        response: a stand-in HTTP response (200, no body).
    """

    def _replay(self, chunks: list[ChatCompletionChunk]) -> Iterator[ChatCompletionChunk]:
        try:
            yield from chunks
        finally:
            self.response.close()

    def close(self) -> None:
        """Stop the stream: iteration ends, the stand-in response is closed."""
        self._iterator.close()  # type: ignore[attr-defined]
        self.response.close()


class AsyncGuardedStream(_Replayed, openai.AsyncStream[ChatCompletionChunk]):
    """A wrapped ``AsyncOpenAI``'s ``create(..., stream=True)``: an ``openai.AsyncStream``.

    ``async for`` it, use it as an async context manager, ``await close()``
    it, as the SDK's own. See the module docstring for what it streams.

    Attributes:
        uncertainty: the report, known before the first chunk (also on the finishing chunk).
        response: a stand-in HTTP response (200, no body).
    """

    async def _replay(
        self, chunks: list[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        try:
            for item in chunks:
                yield item
        finally:
            await self.response.aclose()

    async def close(self) -> None:
        """Stop the stream: iteration ends, the stand-in response is closed."""
        await self._iterator.aclose()  # type: ignore[attr-defined]
        await self.response.aclose()
