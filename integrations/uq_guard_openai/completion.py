"""One guarded chat completion, shared by ``wrap_openai`` and the ``uq_guard_server`` proxy.

:func:`complete` runs a Guard from :func:`build_guard` over an
:class:`Endpoint` and returns a real ``ChatCompletion`` with one choice (what
the policy chose), ``usage`` summed over every call the guard made, and the
report as ``completion.uncertainty`` (an :class:`~uq_guard.UncertaintyReport`,
also in ``completion.model_extra``). The Guard is built once per settings and
serves many calls (``wrap_openai`` keeps one per wrapper);
:func:`guarded_completion` builds one for a single call.
:func:`completion_from_result` builds the same shape from a
:class:`~uq_guard.GuardResult` of any other backend (the proxy's local model).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionUsage

# Submodules, not the ``uq_guard`` root: the root's ``guard()`` imports this package.
from uq_guard._exceptions import ConfigurationError, GenerationError, UncertaintyAbstention
from uq_guard._limits import ConcurrencyLimit
from uq_guard.config import GuardConfig
from uq_guard.embeddings import Embedder
from uq_guard.engine import Guard, GuardResult
from uq_guard.perturb import Perturber
from uq_guard.report import UncertaintyReport
from uq_guard_openai.backend import BoundCall, CallScopedBackend, Endpoint, bind_call

REPORT_FIELD = "uncertainty"
"""The name of the report on a ``ChatCompletion`` (``resp.uncertainty``)."""

SETTINGS_KEY = "uq_guard"
"""Per-call settings travel as ``extra_body={"uq_guard": {...}}``."""


def split_call_settings(
    extra_body: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Take the per-call ``uq_guard`` settings out of ``extra_body``.

    Returns:
        ``(extra_body without them or None, the settings)``; ``enabled`` is
        kept in the settings for the caller to act on.

    Raises:
        ConfigurationError: the settings are not a JSON object.
    """
    if not extra_body or SETTINGS_KEY not in extra_body:
        return (dict(extra_body) if extra_body else None), {}
    rest = {k: v for k, v in extra_body.items() if k != SETTINGS_KEY}
    settings = extra_body[SETTINGS_KEY]
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"{SETTINGS_KEY} must be an object of GuardConfig settings, got {settings!r}"
        )
    return (rest or None), dict(settings)


def plain_messages(messages: Any) -> list[dict[str, Any]]:
    """The messages as dicts (pydantic message objects from earlier replies are dumped).

    Raises:
        ConfigurationError: ``messages`` is not a list of messages.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of chat messages")
    return [m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else m for m in messages]


def build_guard(
    config: GuardConfig,
    *,
    with_fallback: bool = False,
    embedder: Embedder | None = None,
    perturber: Perturber | None = None,
    model_limit: ConcurrencyLimit | None = None,
) -> Guard:
    """A Guard over OpenAI-compatible endpoints that serves many calls, one :func:`complete` each.

    Its backends answer whichever call :func:`complete` binds, so one Guard
    (its perturber, its calibration read once, its cap) serves every call
    made with ``config``. The cap on HTTP calls in flight is the Guard's own
    ``model_limit``: the one the engine holds for its model requests, over
    the model and the fallback alike.

    Args:
        config: the guard's settings.
        with_fallback: give it a fallback backend (each call then brings a fallback endpoint).
        embedder / perturber: custom engine parts.
        model_limit: the cap on HTTP calls in flight, shared by every call of
            this Guard (pass one to several Guards to share it); by default a
            new one of ``config.max_concurrency`` slots.

    Raises:
        ConfigurationError: bad settings, or ``policy="fallback"`` without ``with_fallback``.
    """

    limit = model_limit or ConcurrencyLimit(config.max_concurrency)

    def backend(fallback: bool) -> CallScopedBackend:
        return CallScopedBackend(slots=limit, timeout_s=config.timeout_s, fallback=fallback)

    return Guard(
        backend(False),
        config,
        embedder=embedder,
        perturber=perturber,
        fallback=backend(True) if with_fallback else None,
        model_limit=limit,
    )


async def complete(
    guard: Guard,
    call_kwargs: dict[str, Any],
    endpoint: Endpoint,
    *,
    fallback: Endpoint | None = None,
    slots: ConcurrencyLimit | None = None,
) -> ChatCompletion:
    """Answer one ``chat.completions.create`` call with a Guard from :func:`build_guard`.

    Args:
        guard: built by :func:`build_guard` (with a fallback when ``fallback`` is given).
        call_kwargs: the user's ``create`` arguments, ``uq_guard`` settings removed,
            no ``stream``.
        endpoint: where the reply and the samples go.
        fallback: where ``policy="fallback"`` sends the question.
        slots: this call's own cap on HTTP calls in flight; by default the
            Guard's, shared with its other calls.

    Raises:
        openai.OpenAIError: the reply itself failed; the SDK's own exception,
            exactly as an unguarded call would have raised it.
        GenerationError: the reply failed for another reason (a malformed response).
        UncertaintyAbstention: ``policy="raise"`` acted; ``.reply`` is the
            annotated ``ChatCompletion`` it withheld.
        DegradedResultError: ``strict=True`` and the estimate was degraded.
    """
    kwargs = {**call_kwargs, "messages": plain_messages(call_kwargs.get("messages"))}
    model = str(kwargs.get("model", ""))
    try:
        with bind_call(BoundCall(kwargs, endpoint, fallback, slots)):
            result = await guard.arun(kwargs["messages"])
    except GenerationError as exc:
        if isinstance(exc.cause, openai.OpenAIError):
            raise exc.cause from None
        raise
    except UncertaintyAbstention as exc:
        native = exc.reply if isinstance(exc.reply, ChatCompletion) else None
        withheld = attach_report(
            native or new_completion(str(exc.reply or ""), model), exc.report, None
        )
        raise UncertaintyAbstention(exc.report, reply=withheld) from None
    return completion_from_result(result, model)


async def guarded_completion(
    call_kwargs: dict[str, Any],
    endpoint: Endpoint,
    config: GuardConfig,
    *,
    fallback: Endpoint | None = None,
    embedder: Embedder | None = None,
    perturber: Perturber | None = None,
) -> ChatCompletion:
    """Answer one ``chat.completions.create`` call under a Guard built for it alone.

    A caller that makes many calls with the same settings should build the
    Guard once (:func:`build_guard`) and call :func:`complete`, as
    ``wrap_openai`` does: the calibration is then read once and the cap on
    calls in flight holds across calls.

    Args:
        call_kwargs: the user's ``create`` arguments, ``uq_guard`` settings already removed.
        endpoint: where the reply and the samples go.
        config: the guard's settings for this call.
        fallback: where ``policy="fallback"`` sends the question.
        embedder / perturber: custom engine parts.

    Raises:
        What :func:`complete` raises, and ConfigurationError for bad settings.
    """
    guard = build_guard(
        config, with_fallback=fallback is not None, embedder=embedder, perturber=perturber
    )
    return await complete(guard, call_kwargs, endpoint, fallback=fallback)


def completion_from_result(result: GuardResult, model: str) -> ChatCompletion:
    """The ``ChatCompletion`` a user gets for a guarded call's result.

    When the policy kept a model's reply its own ``ChatCompletion`` is
    returned (tool calls and all); an abstention or a best-of answer replaces
    the text of the first choice; a backend without native completions (a
    local model) gets a fresh one.
    """
    decision = result.report.decision
    source = {"answer": result.reply, "fallback": result.fallback_reply}.get(decision)
    native = source.raw[0] if source is not None and source.raw else None
    if isinstance(native, ChatCompletion):
        completion = native.model_copy(update={"choices": native.choices[:1]})
    else:
        base = result.reply.raw[0] if result.reply.raw else None
        like = base if isinstance(base, ChatCompletion) else None
        completion = new_completion(result.text, like.model if like else model, like)
    return attach_report(completion, result.report, result)


def new_completion(text: str, model: str, like: ChatCompletion | None = None) -> ChatCompletion:
    """A one-choice ``ChatCompletion`` holding ``text`` (ids taken from ``like`` if given)."""
    return ChatCompletion.model_validate(
        {
            "id": like.id if like is not None else f"chatcmpl-uqg-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": like.created if like is not None else int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                }
            ],
        }
    )


def attach_report(
    completion: ChatCompletion, report: UncertaintyReport, result: GuardResult | None
) -> ChatCompletion:
    """Put the report on ``completion`` and, with a result, the summed usage of every call."""
    if result is not None and result.usage.model_calls:
        completion.usage = CompletionUsage(
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            total_tokens=result.usage.total_tokens,
        )
    setattr(completion, REPORT_FIELD, report)
    return completion
