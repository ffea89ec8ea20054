"""``LangChainBackend``: any LangChain chat model (or bound runnable) as a uq_guard Backend."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig

from uq_guard.backend import Generation, GenerationRequest, Usage, fan_out


def message_text(message: BaseMessage) -> str:
    """The text of a reply, with its tool calls (if any) written out so they can be compared."""
    text = message.text if isinstance(message.text, str) else message.text()
    tool_calls = getattr(message, "tool_calls", None) or []
    if tool_calls:
        rendered = [
            json.dumps({"name": c["name"], "args": c["args"]}, sort_keys=True) for c in tool_calls
        ]
        text = "\n".join([text, *rendered]) if text else "\n".join(rendered)
    return text


def sampling_runnable(model: Runnable, temperature: float, max_tokens: int | None) -> Runnable:
    """A copy of ``model`` that samples at ``temperature`` and skips any LLM cache.

    Works through ``bind_tools``/``bind`` wrappers. Settings the model does
    not have (a fake model has no temperature) are left alone.
    """
    if isinstance(model, RunnableBinding):
        return model.model_copy(
            update={"bound": sampling_runnable(model.bound, temperature, max_tokens)}
        )
    fields = getattr(type(model), "model_fields", {})
    update: dict[str, Any] = {}
    if "cache" in fields:
        update["cache"] = False
    if "temperature" in fields:
        update["temperature"] = temperature
    if max_tokens is not None:
        for name in ("max_tokens", "max_new_tokens", "num_predict", "max_output_tokens"):
            if name in fields:
                update[name] = max_tokens
                break
    return model.model_copy(update=update) if update else model


def has_temperature(model: Runnable) -> bool:
    """Whether sampling settings reach ``model`` (else samples use its own setting)."""
    inner = model.bound if isinstance(model, RunnableBinding) else model
    if isinstance(inner, RunnableBinding):
        return has_temperature(inner)
    return "temperature" in getattr(type(inner), "model_fields", {})


def _usage(message: BaseMessage) -> Usage:
    meta = getattr(message, "usage_metadata", None) or {}
    return Usage(meta.get("input_tokens", 0), meta.get("output_tokens", 0), 1)


def _token_logprobs(message: BaseMessage) -> list[float] | None:
    content = (message.response_metadata.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [float(item["logprob"]) for item in content if "logprob" in item]


@dataclass(frozen=True)
class CallContext:
    """What one guarded call gives the inner model besides the requests.

    Attributes:
        original: the user's own LangChain messages, used as they are
            whenever a request carries exactly the conversation in ``original_dicts``.
        original_dicts: ``original`` in OpenAI-dict form.
        callbacks: the parent run's child callback manager.
        stop / call_kwargs: what the user passed with the call.
    """

    original: tuple[BaseMessage, ...] = ()
    original_dicts: tuple[dict[str, Any], ...] = ()
    callbacks: BaseCallbackManager | None = None
    stop: list[str] | None = None
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)


# Task-local: each concurrent call through one long-lived backend sees its own context.
# Keyed by backend, so a backend that is not part of the call ignores it.
_CALLS: ContextVar[Mapping[int, CallContext] | None] = ContextVar(
    "uq_guard_langchain_calls", default=None
)


@contextmanager
def call_context(backends: Iterable[object], context: CallContext) -> Iterator[None]:
    """Make ``context`` the call that ``backends`` answer inside the block.

    ``GuardedChatModel`` builds its backends (and its Guard) once; each call
    binds its own messages, callbacks, ``stop`` and call kwargs with this.
    Tasks started inside the block inherit the binding.
    """
    calls = {**(_CALLS.get() or {}), **{id(b): context for b in backends}}
    token = _CALLS.set(calls)
    try:
        yield
    finally:
        _CALLS.reset(token)


class LangChainBackend:
    """Answers GenerationRequests with a LangChain runnable, one call per answer.

    The reply request (``temperature=None``) goes to the model exactly as the
    user configured it, with the user's own messages, ``stop`` and call
    kwargs; samples go to a cache-free copy at the sampling temperature.
    Calls run concurrently up to ``max_concurrency`` per batch, each under
    ``timeout_s``; inside a guarded call each also holds a slot of the
    guard's process-wide cap (see :func:`uq_guard.backend.fan_out`). Their
    callbacks nest under the caller's run.

    One backend serves many calls: the per-call parts (messages, callbacks,
    ``stop``, call kwargs) come from :func:`call_context` when a call binds
    them, else from the constructor's arguments.

    Args:
        model: a chat model or a runnable made from one (``bind_tools``).
        max_concurrency: requests of one batch in flight at once.
        timeout_s: limit of each model call.
        original / original_dicts / callbacks / stop / call_kwargs: the
            :class:`CallContext` used when no call is bound.
    """

    #: one model call a request: a guard may ask for the reply before the perturbations exist
    independent_requests = True

    def __init__(
        self,
        model: Runnable,
        *,
        max_concurrency: int,
        timeout_s: float | None,
        original: Sequence[BaseMessage] = (),
        original_dicts: Sequence[dict[str, Any]] = (),
        callbacks: BaseCallbackManager | None = None,
        stop: list[str] | None = None,
        call_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.default_context = CallContext(
            original=tuple(original),
            original_dicts=tuple(original_dicts),
            callbacks=callbacks,
            stop=stop,
            call_kwargs=dict(call_kwargs or {}),
        )

    def _context(self) -> CallContext:
        return (_CALLS.get() or {}).get(id(self), self.default_context)

    @staticmethod
    def _messages(context: CallContext, request: GenerationRequest) -> list[BaseMessage]:
        if context.original and tuple(request.messages) == context.original_dicts:
            return list(context.original)
        return convert_to_messages(list(request.messages))

    async def _one_answer(self, request: GenerationRequest) -> Generation:
        context = self._context()
        is_reply = request.temperature is None
        runnable = (
            self.model
            if is_reply
            else sampling_runnable(self.model, request.temperature, request.max_tokens)
        )
        tag = "uq_guard:reply" if is_reply else "uq_guard:sample"
        config = RunnableConfig(callbacks=context.callbacks, tags=[tag])
        kwargs = {**context.call_kwargs, **({"stop": context.stop} if context.stop else {})}
        message = await runnable.ainvoke(self._messages(context, request), config=config, **kwargs)
        if not isinstance(message, BaseMessage):
            message = AIMessage(content=str(message))
        logprobs = _token_logprobs(message)
        return Generation(
            texts=[message_text(message)],
            raw=[message],
            usage=_usage(message),
            token_logprobs=[logprobs] if logprobs else None,
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        # One model call per answer: expand n, fan out, then regroup by request.
        units = [
            (i, GenerationRequest(r.messages, 1, r.temperature, r.max_tokens, r.want_logprobs))
            for i, r in enumerate(requests)
            for _ in range(r.n)
        ]
        answers = await fan_out(
            [u for _, u in units],
            self._one_answer,
            max_concurrency=self.max_concurrency,
            timeout_s=self.timeout_s,
        )
        grouped = [Generation() for _ in requests]
        for (index, _), answer in zip(units, answers, strict=True):
            target = grouped[index]
            target.usage = target.usage + answer.usage
            if answer.ok:
                target.texts.extend(answer.texts)
                target.raw.extend(answer.raw)
                if answer.token_logprobs:
                    target.token_logprobs = (target.token_logprobs or []) + answer.token_logprobs
            elif target.error is None:
                target.error = answer.error
        return grouped  # a partly failed request keeps its answers and its error
