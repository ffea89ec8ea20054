"""The models an eval run talks to: a backend from a model description, and two wrappers.

* :func:`make_backend` turns ``"local"``, ``"openai:URL[#model]"``,
  ``"py:module:attr"`` or a model object into a :class:`~uq_guard.backend.Backend`
  (importing the integration it needs only then).
* :class:`ReplayBackend` answers the reply and the unperturbed question's
  samples from an earlier run's records, so comparing configurations on the
  same questions costs less.
* :class:`ReplyCap` gives the reply (every request without a token cap of
  its own) the product's reply length.

This module is the top layer of ``uq_guard/`` for evaluation: it alone
imports integrations, and only inside functions.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard._guard import _defined_in
from uq_guard._messages import last_user_index, user_prompt
from uq_guard.backend import Backend, Generation, GenerationRequest, Message, Usage, is_backend
from uq_guard.evaluation.records import EvalRecord

__all__ = ["ReplayBackend", "ReplyCap", "conversation", "make_backend"]


def make_backend(
    spec: Any,
    *,
    max_tokens: int | None = None,
    seed: int | None = None,
    max_concurrency: int = 8,
    timeout_s: float | None = 120.0,
) -> Backend:
    """Turn a model description into a :class:`~uq_guard.backend.Backend`.

    Args:
        spec: ``"local"`` (SmolLM2-135M-Instruct through ``uq_guard_hf``),
            ``"openai:URL"`` or ``"openai:URL#model"`` (an OpenAI-compatible
            server; the key comes from ``OPENAI_API_KEY``, default ``"none"``),
            ``"py:module:attr"`` (an object or a no-argument factory: a
            Backend or a LangChain chat model), or the object itself (a
            Backend or a LangChain chat model).
        max_tokens: cap on the reply's tokens, the product's reply length (the
            samples' cap is ``GuardConfig.max_tokens``); None: the backend's own.
        seed: sampling seed of the local model.
        max_concurrency / timeout_s: for API and LangChain backends.

    Raises:
        ConfigurationError: an unknown spec, or an object that is no model.
        MissingDependencyError: the integration's extra is not installed.
    """
    if isinstance(spec, str):
        if spec == "local":
            try:
                from uq_guard_hf import HuggingFaceChatModel
            except ImportError as exc:
                raise MissingDependencyError("the local model", "local") from exc
            kwargs: dict[str, Any] = {"seed": seed}
            if max_tokens is not None:
                kwargs["max_new_tokens"] = max_tokens
            return HuggingFaceChatModel.default(**kwargs)
        if spec.startswith("openai:"):
            return _openai_backend(
                spec.removeprefix("openai:"),
                max_tokens=max_tokens,
                max_concurrency=max_concurrency,
                timeout_s=timeout_s,
            )
        if spec.startswith("py:"):
            module_name, _, attr = spec.removeprefix("py:").rpartition(":")
            if not module_name:
                raise ConfigurationError(f"model spec {spec!r}: expected py:module:attr")
            target = getattr(importlib.import_module(module_name), attr)
            obj = target() if callable(target) and not _is_model(target) else target
            return make_backend(obj, max_concurrency=max_concurrency, timeout_s=timeout_s)
        raise ConfigurationError(
            f"unknown model {spec!r}; use 'local', 'openai:URL[#model]' or 'py:module:attr'"
        )
    if is_backend(spec):
        return spec
    if _defined_in(spec, "langchain_core", "langchain", "langchain_community"):
        try:
            from uq_guard_langchain.backend import LangChainBackend
        except ImportError as exc:
            raise MissingDependencyError("evaluating a LangChain model", "langchain") from exc

        return LangChainBackend(spec, max_concurrency=max_concurrency, timeout_s=timeout_s)
    raise ConfigurationError(
        f"cannot evaluate a {type(spec).__name__}: pass a Backend, a LangChain chat model, "
        "'local' or 'openai:URL[#model]'"
    )


def _is_model(obj: Any) -> bool:
    return is_backend(obj) or hasattr(obj, "ainvoke")


def _openai_backend(
    target: str, *, max_tokens: int | None, max_concurrency: int, timeout_s: float | None
) -> Backend:
    try:
        from uq_guard_openai.backend import backend_for_url
    except ImportError as exc:
        raise MissingDependencyError("an OpenAI-compatible model", "openai") from exc

    url, _, model = target.partition("#")
    if not url:
        raise ConfigurationError("openai model spec needs a URL: openai:http://host:port/v1#model")
    return backend_for_url(
        url, model, max_tokens=max_tokens, max_concurrency=max_concurrency, timeout_s=timeout_s
    )


class ReplayBackend:
    """Answers the reply and the x_0 samples from earlier records; the rest goes to ``backend``.

    Used to compare configurations on the same questions at a lower cost: the
    greedy reply and the samples of the unperturbed question do not depend on
    the perturbation, so a second run can take them from the first one's
    records (same system message and reply cap; for samples, same
    temperature, max_tokens, and at least as many). Only first-round requests
    are replayed: a later round of adaptive sampling (``seed_offset > 0``)
    always goes to ``backend``.

    Attributes:
        replayed: requests served from the records, by question.
    """

    def __init__(self, backend: Backend, records: Mapping[str, EvalRecord]) -> None:
        self.backend = backend
        self._by_question = {r.question: r for r in records.values() if r.ok and r.prompts}
        self.replayed: dict[str, int] = {}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        answers: list[Generation | None] = [self._replay(r) for r in requests]
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            fresh = await self.backend.generate([requests[i] for i in missing])
            for i, generation in zip(missing, fresh, strict=False):
                answers[i] = generation
        return [
            a if a is not None else Generation(error=RuntimeError("no answer")) for a in answers
        ]

    def _replay(self, request: GenerationRequest) -> Generation | None:
        # a later adaptive round (seed_offset > 0) must draw new answers, not the stored ones
        if request.seed_offset:
            return None
        question = user_prompt(request.messages)
        system = _system_of(request.messages)
        if tuple(request.messages) != conversation(system, question):
            return None  # a longer conversation (e.g. the verbalized question) is not stored
        record = self._by_question.get(question)
        if record is None or record.prompts[0] != question or record.system != system:
            return None
        if request.temperature is None:
            if request.max_tokens != record.sampling.get("reply_max_tokens"):
                return None  # a reply cut at another length
            generation = Generation(
                texts=[record.reply],
                token_logprobs=[record.reply_token_logprobs]
                if record.reply_token_logprobs
                else None,
                token_entropies=(
                    [record.reply_token_entropies] if record.reply_token_entropies else None
                ),
                usage=Usage(),
            )
        else:
            stored = record.samples[0] if record.samples else []
            if (
                request.temperature != record.sampling.get("temperature")
                or request.max_tokens != record.sampling.get("max_tokens")
                or request.n > len(stored)
            ):
                return None
            generation = Generation(texts=list(stored[: request.n]), usage=Usage())
        self.replayed[question] = self.replayed.get(question, 0) + 1
        return generation


class ReplyCap:
    """Gives every request without a token cap of its own (the reply) ``max_tokens``."""

    def __init__(self, backend: Backend, max_tokens: int) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        capped = [
            r if r.max_tokens is not None else dataclasses.replace(r, max_tokens=self.max_tokens)
            for r in requests
        ]
        return await self.backend.generate(capped)


def conversation(system: str | None, question: str) -> tuple[Message, ...]:
    """What the model is sent for a question: the system message, if any, then the question."""
    user: Message = {"role": "user", "content": question}
    return (user,) if system is None else ({"role": "system", "content": system}, user)


def _system_of(messages: Sequence[Message]) -> str | None:
    """The system message before the last user message, when it is the only message before it."""
    before = messages[: last_user_index(messages)]
    if len(before) == 1 and before[0].get("role") == "system":
        content = before[0].get("content")
        return content if isinstance(content, str) else None
    return None
