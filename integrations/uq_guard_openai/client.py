"""``wrap_openai``: an ``OpenAI`` / ``AsyncOpenAI`` client whose chat completions are guarded.

The wrapped client is a copy of the user's, of a subclass of its own class
(``isinstance(wrapped, OpenAI)`` holds, ``with_options`` keeps the guard).
Only ``chat.completions.create`` changes; everything else is the SDK's own.
``stream=True`` is guarded too: the guarded call runs first, then its chosen
text streams (see :mod:`uq_guard_openai.stream`). What the guard cannot
assess passes through untouched: ``n > 1``, ``with_raw_response`` /
``with_streaming_response`` calls, and calls with
``extra_body={"uq_guard": {"enabled": False}}``.

A wrapper builds its :class:`~uq_guard.Guard` once and reuses it: the
calibration is read once, and ``max_concurrency`` caps the HTTP calls in
flight over every call through the wrapper (and its ``with_options``
copies), from any thread or event loop: the Guard's own ``model_limit``,
the cap the engine holds its model requests to. A call whose ``extra_body``
settings change the effective config gets a Guard of its own, kept in a
small LRU (:class:`~uq_guard._guard_cache.GuardCache`, the last 8 configs);
Guards with the same ``max_concurrency`` share one cap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from openai._constants import RAW_RESPONSE_HEADER
from openai._types import NotGiven, Omit
from openai.resources.chat import AsyncChat, AsyncCompletions, Chat, Completions
from openai.types.chat import ChatCompletion

# Submodules, not the ``uq_guard`` root: the root's ``guard()`` imports this package.
from uq_guard._exceptions import ConfigurationError, UnsupportedModelError
from uq_guard._guard_cache import GuardCache, config_key
from uq_guard._sync import run_sync
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder
from uq_guard.engine import Guard
from uq_guard.perturb import Perturber
from uq_guard_openai.backend import CreateFn, Endpoint, ServerCapabilities
from uq_guard_openai.completion import build_guard, complete, split_call_settings
from uq_guard_openai.stream import (
    AsyncGuardedStream,
    GuardedStream,
    completion_chunks,
    stand_in_response,
)

logger = logging.getLogger(__name__)

Client = TypeVar("Client", openai.OpenAI, openai.AsyncOpenAI)


_GUARDS_KEPT = 8
"""Guards a wrapper keeps, one per effective config (per-call settings make more)."""


@dataclass(eq=False)
class _GuardSettings:
    """What one wrapper (and its ``with_options`` copies) shares: settings, Guards, caps."""

    config: GuardConfig
    fallback: str | openai.OpenAI | openai.AsyncOpenAI | None
    embedder: Embedder | None
    perturber: Perturber | None
    capabilities: ServerCapabilities
    guards: GuardCache = field(default_factory=lambda: GuardCache(_GUARDS_KEPT))

    def guard_for(self, config: GuardConfig) -> Guard:
        """The wrapper's Guard for ``config``: built on first use, then reused.

        Raises:
            ConfigurationError: ``config`` cannot make a Guard (then none is kept).
        """

        def build() -> Guard:
            return build_guard(
                config,
                with_fallback=self.fallback is not None,
                embedder=self.embedder,
                perturber=self.perturber,
                model_limit=self.guards.model_limit(config.max_concurrency),
            )

        return self.guards.get(config_key(config), build)


def wrap_openai(
    client: Client,
    *,
    fallback: str | openai.OpenAI | openai.AsyncOpenAI | None = None,
    embedder: Embedder | None = None,
    perturber: Perturber | None = None,
    guard_config: GuardConfig | None = None,
    **config: Any,
) -> Client:
    """Guard ``client.chat.completions.create`` with an uncertainty report.

    Args:
        client: an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (any base URL:
            OpenAI, Azure-compatible gateways, vLLM, llama.cpp...).
        fallback: for ``policy="fallback"``: another model name on the same
            client, or another client of the same kind (same model name).
        embedder / perturber: custom engine parts.
        guard_config: a whole :class:`~uq_guard.GuardConfig`; keywords override it.
        **config: any ``GuardConfig`` setting (``policy``, ``threshold``...).

    Returns:
        A client of the same type whose ``chat.completions.create`` returns a
        ``ChatCompletion`` with ``resp.uncertainty`` (the report), or with
        ``stream=True`` a stream of ``ChatCompletionChunk`` whose finishing
        chunk carries ``chunk.uncertainty`` (see :mod:`uq_guard_openai.stream`).
        Per call, ``extra_body={"uq_guard": {...}}`` overrides settings
        (``{"enabled": False}`` skips the guard). The wrapper builds its
        Guard once, on its first guarded call, and reuses it.

    Raises:
        ConfigurationError: bad settings, a fallback of the wrong kind, or
            ``policy="fallback"`` without one.
        UnsupportedModelError: ``client`` is not an OpenAI client.

    Example:
        >>> client = wrap_openai(OpenAI(), policy="abstain", threshold=0.5)
        >>> resp = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        >>> resp.choices[0].message.content, resp.uncertainty.confidence
    """
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise UnsupportedModelError(
            f"wrap_openai needs an openai.OpenAI or openai.AsyncOpenAI client, got {type(client)!r}"
        )
    settings = _GuardSettings(
        config=GuardConfig.build(guard_config, **config),
        fallback=fallback,
        embedder=embedder,
        perturber=perturber,
        capabilities=ServerCapabilities(),
    )
    _check_fallback(client, settings)
    wrapped = client.with_options(http_client=client._client)
    wrapped.__class__ = _guarded_class(type(client))
    wrapped._uq_guard = settings
    return wrapped


def _check_fallback(client: Any, settings: _GuardSettings) -> None:
    fallback, policy = settings.fallback, settings.config.policy
    if policy == "fallback" and fallback is None:
        raise ConfigurationError("policy='fallback' needs fallback=<model name or client>")
    is_async = isinstance(client, openai.AsyncOpenAI)
    if isinstance(fallback, (openai.OpenAI, openai.AsyncOpenAI)) and (
        isinstance(fallback, openai.AsyncOpenAI) != is_async
    ):
        raise ConfigurationError(
            "the fallback client must be of the same kind as the guarded one "
            f"({'AsyncOpenAI' if is_async else 'OpenAI'})"
        )
    if fallback is not None and not isinstance(fallback, (str, openai.OpenAI, openai.AsyncOpenAI)):
        raise ConfigurationError(f"fallback must be a model name or a client, got {fallback!r}")


@functools.cache
def _guarded_class(base: type) -> type:
    """A subclass of the user's client class whose ``chat`` is guarded."""
    is_async = issubclass(base, openai.AsyncOpenAI)
    chat_class = _GuardedAsyncChat if is_async else _GuardedChat

    def chat(self: Any) -> Any:
        return chat_class(self)

    def copy(self: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("http_client", self._client)  # share the connection pool
        copied = base.copy(self, **kwargs)
        copied._uq_guard = self._uq_guard
        return copied

    namespace = {
        "__doc__": f"{base.__name__} with uq_guard on chat.completions.create.",
        "__module__": __name__,
        "chat": functools.cached_property(chat),
        "copy": copy,
        "with_options": copy,
    }
    cls = type(f"Guarded{base.__name__}", (base,), namespace)
    cls.chat.__set_name__(cls, "chat")
    return cls


@dataclass
class _Plan:
    """How to answer a guarded call."""

    config: GuardConfig
    call_kwargs: dict[str, Any]  # for the guarded (non-streamed) calls
    stream: bool = False
    include_usage: bool = False


def _plan(client: Any, kwargs: dict[str, Any]) -> _Plan | None:
    """How to guard a call, or None to pass it through.

    Either way the ``uq_guard`` settings are taken out of ``kwargs["extra_body"]``.
    """
    extra_body, overrides = split_call_settings(kwargs.get("extra_body"))
    kwargs.pop("extra_body", None)
    if extra_body is not None:
        kwargs["extra_body"] = extra_body
    enabled = overrides.pop("enabled", True)
    headers = kwargs.get("extra_headers") or {}
    if (
        not enabled
        or (isinstance(kwargs.get("n"), int) and kwargs["n"] > 1)
        or RAW_RESPONSE_HEADER in headers
    ):
        return None
    settings: _GuardSettings = client._uq_guard
    config = GuardConfig.build(settings.config, **overrides)
    # The SDK's helpers (``chat.completions.stream``) pass every unset argument as omit.
    call_kwargs = {k: v for k, v in kwargs.items() if not isinstance(v, (Omit, NotGiven))}
    if call_kwargs.get("stream") is not True:
        return _Plan(config, call_kwargs)
    # The guarded calls are never streamed: the stream replays their decided result.
    del call_kwargs["stream"]
    options = call_kwargs.pop("stream_options", None) or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return _Plan(config, call_kwargs, stream=True, include_usage=include_usage)


def _endpoint_for(client: Any, capabilities: ServerCapabilities) -> Endpoint:
    """An endpoint over a client: its own SDK retries for the reply, none for samples."""
    sampler = client.__dict__.get("_uq_guard_sampler")
    if sampler is None:
        # One retry-free twin per client, sharing its connection pool.
        sampler = client.with_options(max_retries=0, http_client=client._client)
        client.__dict__["_uq_guard_sampler"] = sampler
    if isinstance(client, openai.AsyncOpenAI):
        return Endpoint(
            AsyncCompletions(client).create,
            AsyncCompletions(sampler).create,
            capabilities,
            reply_errors_final=True,
        )
    return Endpoint(
        _in_threads(Completions(client).create),
        _in_threads(Completions(sampler).create),
        capabilities,
        reply_errors_final=True,
    )


def _in_threads(create: Any) -> CreateFn:
    """An async twin of a sync ``create``: each call runs in a worker thread."""

    async def call(**kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            _executor(), functools.partial(create, **kwargs)
        )

    return call


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # One pool for every sync guarded call of the process: blocking HTTP
    # calls, so more threads than cores is right; each wrapper's cap
    # (max_concurrency) bounds what its guarded calls take.
    return ThreadPoolExecutor(max_workers=64, thread_name_prefix="uq_guard-openai")


def _endpoints(client: Any) -> tuple[_GuardSettings, Endpoint, Endpoint | None]:
    settings: _GuardSettings = client._uq_guard
    endpoint = _endpoint_for(client, settings.capabilities)
    fallback: Endpoint | None = None
    if isinstance(settings.fallback, str):
        fallback = dataclasses.replace(endpoint, overrides={"model": settings.fallback})
    elif settings.fallback is not None:
        fallback = _endpoint_for(settings.fallback, ServerCapabilities())
    return settings, endpoint, fallback


def _guarded_call(
    client: Any, kwargs: dict[str, Any]
) -> tuple[_Plan, Coroutine[Any, Any, ChatCompletion]] | None:
    """The plan and the guarded call for ``create(**kwargs)``, or None to pass it through."""
    plan = _plan(client, kwargs)
    if plan is None:
        return None
    settings, endpoint, fallback = _endpoints(client)
    guard = settings.guard_for(plan.config)
    return plan, complete(guard, plan.call_kwargs, endpoint, fallback=fallback)


class _GuardedCompletions(Completions):
    def create(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        guarded = None if args else _guarded_call(self._client, kwargs)
        if guarded is None:
            return super().create(*args, **kwargs)
        plan, call = guarded
        completion = run_sync(call)
        if not plan.stream:
            return completion
        return GuardedStream(
            completion_chunks(completion, include_usage=plan.include_usage),
            response=stand_in_response(self._client, completion),
        )


class _GuardedAsyncCompletions(AsyncCompletions):
    async def create(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        guarded = None if args else _guarded_call(self._client, kwargs)
        if guarded is None:
            return await super().create(*args, **kwargs)
        plan, call = guarded
        completion = await call
        if not plan.stream:
            return completion
        return AsyncGuardedStream(
            completion_chunks(completion, include_usage=plan.include_usage),
            response=stand_in_response(self._client, completion),
        )


class _GuardedChat(Chat):
    @functools.cached_property
    def completions(self) -> Completions:  # type: ignore[override]
        return _GuardedCompletions(self._client)


class _GuardedAsyncChat(AsyncChat):
    @functools.cached_property
    def completions(self) -> AsyncCompletions:  # type: ignore[override]
        return _GuardedAsyncCompletions(self._client)
