"""What the proxy forwards to: an OpenAI-compatible URL or a local Hugging Face model.

Both answer :meth:`Upstream.complete` with a guarded ``ChatCompletion``
(see :func:`uq_guard_openai.completion.complete`) and list the model names
they serve. An OpenAI-compatible upstream is called with SDK retries off:
the engine's tenacity loop retries, honouring ``Retry-After``. Its HTTP goes
through aiohttp when installed (the ``server`` extra installs it; the SDK's
``DefaultAioHttpClient``): a guarded request is up to 51 upstream calls, and
aiohttp spends less CPU on each than httpx (``benchmarks/upstream_http.py``;
httpx's pool probes every idle connection's socket for each request it places).

Guard lifetimes: an upstream builds a :class:`~uq_guard.Guard` once per
effective config (the server's settings plus a request's allowed
``uq_guard`` overrides) and keeps the last few
(:class:`~uq_guard._guard_cache.GuardCache`, least recently used out).
Requests with the same settings share one Guard (its calibration file is
read once, its perturber's cache serves them all), but each request's
``max_concurrency`` caps that request's upstream calls in flight, not theirs
together: a worker has at most ``max_concurrency`` times its requests at
work in flight (the admission limit bounds those). One cap shared by every
request held a worker to 64 calls in flight, waves of them once two default
requests (51 calls each in front of an upstream that ignores ``n``) met:
3.87 requests/s from one worker where a cap per request serves 7.10
(``benchmarks/results/performance/proxy_load_shared_cap.md`` and
``proxy_load.md`` beside it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import openai
from openai.resources.chat import AsyncCompletions
from openai.types.chat import ChatCompletion
from uq_guard_openai.backend import Endpoint, ServerCapabilities
from uq_guard_openai.completion import (
    build_guard,
    complete,
    completion_from_result,
    new_completion,
)

from uq_guard._guard_cache import GuardCache, config_key
from uq_guard._limits import ConcurrencyLimit
from uq_guard._messages import normalize_messages
from uq_guard.backend import GenerationRequest
from uq_guard.config import GuardConfig
from uq_guard.engine import Guard
from uq_guard_server.redact import redact_url

# ``create`` takes these by name; anything else in a request body travels as extra_body.
_CREATE_PARAMS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}
# ...except these, which steer the SDK itself (headers, query, timeout): never from a body.
_SDK_PARAMS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
_MODELS_TTL_S = 60.0
_MAX_GUARDS = 8


class Upstream(Protocol):
    """Where the proxy's guarded calls go."""

    description: str

    async def models(self) -> list[str]:
        """The model names a client may ask for."""
        ...

    async def complete(
        self, body: dict[str, Any], config: GuardConfig | None, *, max_calls: int | None = None
    ) -> ChatCompletion:
        """Answer one chat request; ``config=None`` means unguarded.

        ``max_calls`` caps the upstream calls this request makes, retries included.
        """
        ...

    async def aclose(self) -> None: ...


def create_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """A request body as ``create`` keyword arguments; unknown fields go in ``extra_body``.

    The SDK's own controls (``extra_headers``, ``extra_query``, ``extra_body``,
    ``timeout``) are dropped: a client must not steer the call to the upstream.
    """
    kwargs = {k: v for k, v in body.items() if k in _CREATE_PARAMS and k not in _SDK_PARAMS}
    extra = {k: v for k, v in body.items() if k not in _CREATE_PARAMS}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


class OpenAIUpstream:
    """Any OpenAI-compatible ``/v1`` URL.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``.
        api_key: the upstream's key (the CLI reads it from the environment).
        timeout_s: limit of one upstream HTTP call.
        models: the names served; ``None`` asks the upstream (cached a minute).
        fallback_model: the model ``policy="fallback"`` asks.
        max_guards: how many Guards (one per distinct effective config) are kept.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        models: list[str] | None = None,
        fallback_model: str | None = None,
        max_guards: int = _MAX_GUARDS,
    ) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            max_retries=0,
            timeout=timeout_s,
            **_http_client(base_url, timeout_s),
        )
        self.description = redact_url(base_url)
        self.fallback_model = fallback_model
        self._fixed_models = models
        self._models: tuple[float, list[str]] | None = None
        self._capabilities = ServerCapabilities()
        self._lock = asyncio.Lock()
        self.guards = GuardCache(max_guards)

    async def models(self) -> list[str]:
        if self._fixed_models is not None:
            return list(self._fixed_models)
        async with self._lock:
            if self._models is None or time.monotonic() - self._models[0] > _MODELS_TTL_S:
                page = await self.client.models.list()
                self._models = (time.monotonic(), [m.id for m in page.data])
            return list(self._models[1])

    async def complete(
        self, body: dict[str, Any], config: GuardConfig | None, *, max_calls: int | None = None
    ) -> ChatCompletion:
        kwargs = create_kwargs(body)
        create = _counted(self.client.chat.completions.create, max_calls)
        if config is None:
            return await create(**kwargs)
        endpoint = Endpoint(create, create, self._capabilities)
        fallback = (
            None
            if self.fallback_model is None
            else Endpoint(
                create, create, self._capabilities, overrides={"model": self.fallback_model}
            )
        )
        guard = self.guards.get(
            config_key(config),
            lambda: build_guard(config, with_fallback=self.fallback_model is not None),
        )
        slots = ConcurrencyLimit(config.max_concurrency)  # this request's own cap
        return await complete(guard, kwargs, endpoint, fallback=fallback, slots=slots)

    async def aclose(self) -> None:
        await self.client.close()


def _http_client(base_url: str, timeout_s: float) -> dict[str, Any]:
    """``http_client=`` the SDK's aiohttp client when aiohttp is installed, else nothing.

    Not for a URL with credentials in it (``http://user:pass@host/v1``): aiohttp
    refuses them beside the API key's ``Authorization`` header, httpx sends both.
    """
    aio = getattr(openai, "DefaultAioHttpClient", None)
    if (
        aio is None
        or importlib.util.find_spec("aiohttp") is None
        or "@" in urlsplit(base_url).netloc
    ):
        return {}
    return {"http_client": aio(timeout=timeout_s)}


class UpstreamCallCapReached(RuntimeError):
    """A request reached the server's cap on upstream calls; not retried."""

    retryable = False


def _counted(create: Any, max_calls: int | None) -> Any:
    """``create`` refusing (with :class:`UpstreamCallCapReached`) past ``max_calls`` calls."""
    if max_calls is None:
        return create
    made = 0

    async def counted(**kwargs: Any) -> ChatCompletion:
        nonlocal made
        if made >= max_calls:
            raise UpstreamCallCapReached(
                f"the server's cap of {max_calls} upstream calls per request is reached"
            )
        made += 1
        return await create(**kwargs)

    return counted


class LocalUpstream:
    """A local model that is a uq_guard ``Backend`` (``uq_guard_hf.HuggingFaceChatModel``).

    The request's ``max_tokens`` and ``temperature`` apply to the reply
    (on a copy that shares the loaded weights). Guards are kept per effective
    config and reply settings (see the module docstring).

    Args:
        model: the loaded local model.
        name: the model name clients ask for.
        max_guards: how many Guards are kept.
    """

    def __init__(self, model: Any, name: str, *, max_guards: int = _MAX_GUARDS) -> None:
        self.model = model
        self.name = name
        self.description = f"local:{name}"
        self.guards = GuardCache(max_guards)

    async def models(self) -> list[str]:
        return [self.name]

    def _reply_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        """The model fields a request sets for its reply (``max_tokens``, ``temperature``)."""
        fields = getattr(type(self.model), "model_fields", {})
        return {
            field: body[key]
            for key, field in (
                ("max_tokens", "max_tokens"),
                ("max_completion_tokens", "max_tokens"),
                ("temperature", "temperature"),
            )
            if body.get(key) is not None and field in fields
        }

    def _configured(self, update: dict[str, Any]) -> Any:
        return self.model.model_copy(update=update) if update else self.model

    async def complete(
        self, body: dict[str, Any], config: GuardConfig | None, *, max_calls: int | None = None
    ) -> ChatCompletion:
        # A local model makes no HTTP calls: the policy's pre-check bounds its work.
        update = self._reply_settings(body)
        messages = normalize_messages(body["messages"])
        if config is None:
            (reply,) = await self._configured(update).generate(
                [GenerationRequest(messages=messages)]
            )
            if not reply.ok:
                raise reply.error or RuntimeError("the local model returned nothing")
            return new_completion(reply.texts[0], self.name)
        key = (config_key(config), tuple(sorted(update.items())))
        guard = self.guards.get(key, lambda: Guard(self._configured(update), config))
        result = await guard.arun(messages)
        return completion_from_result(result, self.name)

    async def aclose(self) -> None:
        return None
