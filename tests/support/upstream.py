"""``ScriptedUpstream``: a small OpenAI-compatible server on 127.0.0.1 that a test controls.

A raw asyncio HTTP/1.1 server in a background thread, so it can misbehave in
ways a framework would not let it: a 429 with ``Retry-After``, a 500, a
reply that never comes, a body cut short, garbage JSON, a choice with no
content. Each chat request is answered by ``script(body, index)`` (``index``
counts chat requests from 0), or by a well-behaved default that answers
``n`` choices (or one, with ``honour_n=False``, as llama.cpp does) after
``delay_s``. Used by the fault-injection tests and the speed benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MODEL = "scripted-model"


@dataclass
class Reply:
    """One scripted HTTP answer.

    Attributes:
        body: a dict (sent as JSON) or raw bytes.
        truncate: announce the full length, send half, close the connection.
        hang_s: wait this long before answering (a timeout, seen from the client).
    """

    status: int = 200
    body: dict[str, Any] | bytes = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    hang_s: float = 0.0


def completion(texts: list[str], *, model: str = MODEL, logprobs: bool = False) -> dict[str, Any]:
    """A chat completion body with one choice per text."""
    choices = []
    for index, text in enumerate(texts):
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if logprobs:
            tokens = text.split() or [""]
            choice["logprobs"] = {
                "content": [
                    {"token": t, "logprob": -0.25, "bytes": None, "top_logprobs": []}
                    for t in tokens
                ]
            }
        choices.append(choice)
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5 * len(texts),
            "total_tokens": 10 + 5 * len(texts),
        },
    }


def is_sample(body: dict[str, Any]) -> bool:
    """Whether a request is one of the guard's samples (they carry a temperature)."""
    return body.get("temperature") is not None


Script = Callable[[dict[str, Any], int], Reply | None]


class ScriptedUpstream:
    """An OpenAI-compatible upstream under a test's control.

    Args:
        answer: the text of every default answer, or ``f(body) -> text``.
        honour_n: return ``n`` choices (False: one, like llama.cpp's server).
        delay_s: how long each default answer takes.
        script: ``f(body, index) -> Reply | None`` (None: the default answer).

    Attributes:
        bodies: every chat request body received, in order.
        base_url: ``http://127.0.0.1:<port>/v1`` once started.
    """

    def __init__(
        self,
        answer: str | Callable[[dict[str, Any]], str] = "Paris is the capital of France.",
        *,
        honour_n: bool = True,
        delay_s: float = 0.0,
        script: Script | None = None,
    ) -> None:
        self.answer = answer
        self.honour_n = honour_n
        self.delay_s = delay_s
        self.script = script
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024), self._loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def sample_bodies(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if is_sample(b)]

    # -- HTTP -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                reply = await self._answer(method, path, raw)
                if not await self._send(writer, reply):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, raw: bytes) -> Reply:
        if method == "GET" and path.endswith("/models"):
            return Reply(
                body={
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "test"}],
                }
            )
        if method != "POST" or not path.endswith("/chat/completions"):
            return Reply(status=404, body={"error": {"message": "not found"}})
        body = json.loads(raw)
        index = len(self.bodies)
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            scripted = self.script(body, index) if self.script is not None else None
            if scripted is not None:
                if scripted.hang_s:
                    await asyncio.sleep(scripted.hang_s)
                return scripted
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return Reply(body=self.default_body(body))
        finally:
            self.in_flight -= 1

    def default_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The well-behaved answer to a chat request."""
        text = self.answer(body) if callable(self.answer) else self.answer
        n = int(body.get("n") or 1) if self.honour_n else 1
        return completion(
            [text] * n, model=body.get("model", MODEL), logprobs=bool(body.get("logprobs"))
        )

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: Reply) -> bool:
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = {"content-type": "application/json", **reply.headers}
        head = f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(payload)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode("latin-1"))
        if reply.truncate:
            writer.write(payload[: len(payload) // 2])
            await writer.drain()
            return False
        writer.write(payload)
        await writer.drain()
        return True
