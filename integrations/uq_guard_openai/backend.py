"""``OpenAIBackend``: an OpenAI-compatible chat completions endpoint as a uq_guard Backend.

The reply request (``temperature=None``) is sent exactly as the user made it
(their model, tools, stop, temperature, max_tokens...), with
``logprobs=True`` added when the server is known or hoped to support it; the
added log-probabilities are read, then stripped from what the user gets.
Sample requests reuse the user's settings with the sampling temperature and
token cap of the :class:`~uq_guard.GuardConfig`, ask for ``n`` answers at
once and check how many choices really came back: a server that ignores
``n`` (llama.cpp's does) or rejects it gets concurrent single requests from
then on. What was learnt about the server lives in :class:`ServerCapabilities`,
shared by every call through the same client.

Retries are not done here: the engine's tenacity loop (``uq_guard._retry``)
resends rate-limited, timed-out, disconnected and 5xx requests, honouring
``Retry-After``. Sample calls therefore go through a client whose SDK retries
are off; the reply goes through the user's own client, and once its SDK
retries are spent its error is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from uq_guard._limits import ConcurrencyLimit
from uq_guard.backend import Generation, GenerationRequest, Usage

logger = logging.getLogger(__name__)

CreateFn = Callable[..., Awaitable[ChatCompletion]]
"""An async ``chat.completions.create``: keyword arguments in, a ``ChatCompletion`` out."""

# Settings of the user's call that must not reach a sample request: one
# answer each with its own randomness, no streaming, no logprobs unless asked.
_NOT_FOR_SAMPLES = frozenset(
    {"stream", "stream_options", "n", "logprobs", "top_logprobs", "seed", "timeout"}
)
_TOKEN_CAP_NAMES = ("max_completion_tokens", "max_tokens")


class MalformedResponseError(ValueError):
    """The server answered, but not with a usable chat completion.

    For instance a choice with no content, refusal or tool call, or no choices.
    Not retryable: the same request would most likely get the same answer.
    """

    retryable = False


@dataclass
class ServerCapabilities:
    """What a server was found to support; ``None`` means not yet known.

    Attributes:
        n: honours ``n > 1`` (False after it returned fewer choices or refused).
        logprobs: returns token log-probabilities when asked.
    """

    n: bool | None = None
    logprobs: bool | None = None


@dataclass
class Endpoint:
    """Where guarded calls go.

    Attributes:
        create_reply: the user's own ``create`` (their SDK retries and timeout).
        create_sample: a ``create`` with SDK retries off.
        capabilities: shared, learnt per server.
        reply_errors_final: the reply's SDK already retried, so its failure
            is not retried again by the engine.
        overrides: call settings replaced for this endpoint (a fallback's ``model``).
    """

    create_reply: CreateFn
    create_sample: CreateFn
    capabilities: ServerCapabilities = field(default_factory=ServerCapabilities)
    reply_errors_final: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def choice_text(choice: Any) -> str:
    """The text of a completion choice: content, else refusal, with tool calls written out.

    Raises:
        MalformedResponseError: the choice has no message, content, refusal or tool call.
    """
    message = getattr(choice, "message", None)
    if message is None:
        raise MalformedResponseError("the server returned a choice with no message")
    text = message.content if isinstance(message.content, str) else None
    if text is None and isinstance(getattr(message, "refusal", None), str):
        text = message.refusal
    calls = [
        json.dumps(
            {"name": call.function.name, "arguments": call.function.arguments}, sort_keys=True
        )
        for call in (getattr(message, "tool_calls", None) or [])
        if getattr(call, "function", None) is not None
    ]
    if text is None and not calls:
        raise MalformedResponseError("the server returned a choice with no content")
    return "\n".join(([text] if text else []) + calls)


def usage_of(completion: ChatCompletion) -> Usage:
    """Token counts of one call (zero when the server sent none)."""
    usage = getattr(completion, "usage", None)
    return Usage(
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
        1,
    )


def _token_logprobs(choice: Any) -> list[float] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [float(item.logprob) for item in content if getattr(item, "logprob", None) is not None]


def _choices(completion: Any) -> list[Any]:
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list):
        raise MalformedResponseError(
            f"the server's response is not a chat completion: {str(completion)[:200]!r}"
        )
    return choices


def _mentions(exc: BaseException, word: str) -> bool:
    return isinstance(exc, openai.BadRequestError) and word in str(exc).lower()


class OpenAIBackend:
    """Answers GenerationRequests with ``chat.completions.create`` calls.

    Args:
        endpoint: the create functions and what the server supports.
        call_kwargs: the user's ``create`` arguments (``messages`` is replaced per request).
        max_concurrency: HTTP calls in flight at once, all requests together.
        timeout_s: limit of each sample call (also sent to the SDK).
        slots: a cap shared with other backends (a wrapper's, across its
            calls); replaces ``max_concurrency`` when given.
    """

    #: one HTTP call a request: a guard may ask for the reply before the perturbations exist
    independent_requests = True

    def __init__(
        self,
        endpoint: Endpoint,
        call_kwargs: dict[str, Any],
        *,
        max_concurrency: int,
        timeout_s: float | None,
        slots: ConcurrencyLimit | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.call_kwargs = {**call_kwargs, **endpoint.overrides}
        self.timeout_s = timeout_s
        self._slots = slots if slots is not None else ConcurrencyLimit(max(1, max_concurrency))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request concurrently; a failure stays in its ``Generation.error``."""
        return list(await asyncio.gather(*(self._answer(r) for r in requests)))

    async def _answer(self, request: GenerationRequest) -> Generation:
        try:
            if request.temperature is None:
                return await self._reply(request)
            return await self._samples(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failure must not sink the batch
            return Generation(error=exc)

    async def _call(self, create: CreateFn, kwargs: dict[str, Any], limit: float | None) -> Any:
        async with self._slots:
            try:
                return await asyncio.wait_for(create(**kwargs), limit)
            except asyncio.TimeoutError:
                raise TimeoutError(f"model call timed out after {limit}s") from None
            except json.JSONDecodeError as exc:  # the SDK lets a garbage body through as is
                raise MalformedResponseError(f"the server's response is not JSON: {exc}") from exc

    # -- the reply ------------------------------------------------------------

    async def _reply(self, request: GenerationRequest) -> Generation:
        caps = self.endpoint.capabilities
        kwargs = {**self.call_kwargs, "messages": list(request.messages)}
        add_logprobs = (
            request.want_logprobs and caps.logprobs is not False and "logprobs" not in kwargs
        )
        try:
            try:
                completion = await self._call(
                    self.endpoint.create_reply,
                    # top_logprobs too: llama.cpp's server sends none without it
                    {**kwargs, "logprobs": True, "top_logprobs": 1} if add_logprobs else kwargs,
                    None,
                )
            except openai.BadRequestError as exc:
                if not (add_logprobs and _mentions(exc, "logprob")):
                    raise
                caps.logprobs, add_logprobs = False, False
                completion = await self._call(self.endpoint.create_reply, kwargs, None)
        except Exception as exc:
            if self.endpoint.reply_errors_final:
                exc.retryable = False  # type: ignore[attr-defined]
            raise
        choices = _choices(completion)
        if not choices:
            raise MalformedResponseError("the server returned no choices")
        text = choice_text(choices[0])
        logprobs = _token_logprobs(choices[0])
        if add_logprobs:
            caps.logprobs = caps.logprobs or logprobs is not None
            choices[0].logprobs = None  # the user did not ask for them
        return Generation(
            texts=[text],
            token_logprobs=[logprobs] if logprobs else None,
            raw=[completion],
            usage=usage_of(completion),
        )

    # -- the samples -------------------------------------------------------------

    def _sample_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.call_kwargs.items() if k not in _NOT_FOR_SAMPLES}
        kwargs["messages"] = list(request.messages)
        kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            cap = next((n for n in _TOKEN_CAP_NAMES if n in kwargs), "max_tokens")
            kwargs[cap] = request.max_tokens
        if self.timeout_s is not None:
            kwargs["timeout"] = self.timeout_s
        return kwargs

    async def _samples(self, request: GenerationRequest) -> Generation:
        caps = self.endpoint.capabilities
        kwargs = self._sample_kwargs(request)
        result = Generation()
        wanted = request.n
        if wanted > 1 and caps.n is not False:
            try:
                completion = await self._call(
                    self.endpoint.create_sample, {**kwargs, "n": wanted}, self.timeout_s
                )
            except openai.BadRequestError as exc:
                if not _mentions(exc, "n"):
                    raise
                logger.info("the server refuses n=%d: sampling one request per answer", wanted)
                caps.n = False
            else:
                self._collect(result, completion)
                got = len(_choices(completion))
                if got < wanted and caps.n is None:
                    logger.info(
                        "the server returned %d of n=%d choices: it ignores n; "
                        "sampling one request per answer from now on",
                        got,
                        wanted,
                    )
                caps.n = caps.n or got >= wanted
                wanted -= got
        if wanted > 0:
            singles = await asyncio.gather(
                *(
                    self._call(self.endpoint.create_sample, kwargs, self.timeout_s)
                    for _ in range(wanted)
                ),
                return_exceptions=True,
            )
            for single in singles:
                if isinstance(single, BaseException):
                    if isinstance(single, asyncio.CancelledError):
                        raise single
                    result.error = result.error or single
                else:
                    self._collect(result, single)
        return result

    @staticmethod
    def _collect(result: Generation, completion: Any) -> None:
        result.usage = result.usage + usage_of(completion)
        for choice in _choices(completion):
            try:
                result.texts.append(choice_text(choice))
            except MalformedResponseError as exc:
                result.error = result.error or exc
            else:
                result.raw.append(choice)


@dataclass(frozen=True)
class BoundCall:
    """The one ``create`` call a long-lived Guard is answering right now.

    Attributes:
        call_kwargs: the user's ``create`` arguments, ``uq_guard`` settings removed.
        endpoint: where the reply and the samples go.
        fallback: where ``policy="fallback"`` sends the question.
        slots: this call's own cap on HTTP calls in flight, in place of the
            one the Guard's calls share (the proxy gives each request its own:
            see :mod:`uq_guard_server.upstream`); ``None``: the shared one.
    """

    call_kwargs: dict[str, Any]
    endpoint: Endpoint
    fallback: Endpoint | None = None
    slots: ConcurrencyLimit | None = None


# Task-local: concurrent calls through one Guard each see their own call.
_BOUND_CALL: ContextVar[BoundCall | None] = ContextVar("uq_guard_openai_call", default=None)


@contextlib.contextmanager
def bind_call(call: BoundCall) -> Iterator[None]:
    """Make ``call`` the one every :class:`CallScopedBackend` answers in this context."""
    token = _BOUND_CALL.set(call)
    try:
        yield
    finally:
        _BOUND_CALL.reset(token)


class CallScopedBackend:
    """The Backend of a Guard that outlives calls: it answers the call bound in the context.

    A wrapper builds its Guard once (perturber, calibration, caps), but each
    ``create`` brings its own model, messages and settings, and may come
    through another copy of the client (``with_options``). Each
    ``generate`` therefore sends the requests through an :class:`OpenAIBackend`
    over the :class:`BoundCall` of the current context (see :func:`bind_call`),
    under ``slots``, the cap shared by every call, unless the bound call
    brings a cap of its own.

    Args:
        slots: HTTP calls in flight at once, over every call of this Guard:
            the Guard's own ``model_limit`` (see
            :func:`~uq_guard_openai.completion.build_guard`).
        timeout_s: limit of each sample call.
        fallback: answer with the bound call's fallback endpoint instead.
    """

    #: one HTTP call a request: a guard may ask for the reply before the perturbations exist
    independent_requests = True

    def __init__(
        self, *, slots: ConcurrencyLimit, timeout_s: float | None, fallback: bool = False
    ) -> None:
        self.slots = slots
        self.timeout_s = timeout_s
        self.fallback = fallback

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer ``requests`` for the bound call.

        Raises:
            RuntimeError: no call is bound, or it has no fallback endpoint (a bug, not a fault).
        """
        call = _BOUND_CALL.get()
        if call is None:
            raise RuntimeError("CallScopedBackend.generate ran outside bind_call()")
        endpoint = call.fallback if self.fallback else call.endpoint
        if endpoint is None:
            raise RuntimeError("the bound call has no fallback endpoint")
        slots = self.slots if call.slots is None else call.slots
        backend = OpenAIBackend(
            endpoint,
            call.call_kwargs,
            max_concurrency=slots.limit,
            timeout_s=self.timeout_s,
            slots=slots,
        )
        return await backend.generate(requests)


def backend_for_url(
    url: str,
    model: str = "",
    *,
    max_tokens: int | None = None,
    max_concurrency: int = 8,
    timeout_s: float | None = None,
) -> OpenAIBackend:
    """A Backend for an OpenAI-compatible server at ``url`` (key from ``OPENAI_API_KEY``).

    Sample calls go out with the SDK's own retries off: the engine retries them.
    """
    client = openai.AsyncOpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "none"))
    endpoint = Endpoint(
        create_reply=client.chat.completions.create,
        create_sample=client.with_options(max_retries=0).chat.completions.create,
    )
    call_kwargs: dict[str, Any] = {"model": model or "default"}
    if max_tokens is not None:
        call_kwargs["max_tokens"] = max_tokens
    return OpenAIBackend(
        endpoint, call_kwargs, max_concurrency=max_concurrency, timeout_s=timeout_s
    )
