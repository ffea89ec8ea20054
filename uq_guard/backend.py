"""The one seam between the engine and a model: :class:`Backend`.

An integration turns its model into a ``Backend``. The engine hands it *all*
the requests of one round of a guarded call at once, so each backend batches
in its own best way (one padded ``generate`` for a local model, concurrent
requests for an API). A backend reports a failed request in its
``Generation.error`` instead of raising, so one bad sample never sinks the
others; retries are the engine's job (see :mod:`uq_guard._retry`).

Messages are OpenAI-style dicts (``{"role": "user", "content": "..."}``);
adapters convert to and from their native types.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from uq_guard._limits import current_model_limit

Message = dict[str, Any]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to answer ``n`` times.

    Attributes:
        messages: the whole conversation, OpenAI-style dicts.
        n: how many answers to sample.
        temperature: sampling temperature; ``None`` means the model's own
            setting (used for the reply the user gets).
        max_tokens: cap on generated tokens; ``None`` means the model's own.
        want_logprobs: ask for per-token log-probabilities when available.
        seed_offset: added to a seeded backend's sampling seed for this request.
            A backend that reseeds its sampler on every call (the local
            Hugging Face model) would otherwise repeat the same draws in the
            second sampling round of an adaptive call; 0 keeps the backend's
            own seed. Backends without a seed ignore it.
    """

    messages: tuple[Message, ...]
    n: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    want_logprobs: bool = False
    seed_offset: int = 0


@dataclass
class Usage:
    """Token counts of one or more model calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.model_calls + other.model_calls,
        )


@dataclass
class Generation:
    """What came back for one :class:`GenerationRequest`.

    Attributes:
        texts: the answers (fewer than ``n`` when some failed or the server
            returned fewer).
        token_logprobs: per answer, the log-probability of each generated
            token, when the backend can give them.
        token_entropies: per answer, the entropy of the next-token
            distribution at each step, when the backend sees full logits.
        raw: per answer, the backend's native object (an ``AIMessage``,
            a ``ChatCompletion`` choice...) so adapters can return it untouched.
        usage: tokens and calls spent.
        error: the exception when the request failed (wholly or partly).
    """

    texts: list[str] = field(default_factory=list)
    token_logprobs: list[list[float]] | None = None
    token_entropies: list[list[float]] | None = None
    raw: list[Any] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.texts)


@runtime_checkable
class Backend(Protocol):
    """Anything that can answer a batch of chat requests."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request; one :class:`Generation` per request, in order."""
        ...


async def fan_out(
    requests: Sequence[GenerationRequest],
    answer_one: Callable[[GenerationRequest], Awaitable[Generation]],
    *,
    max_concurrency: int,
    timeout_s: float | None,
) -> list[Generation]:
    """Answer requests one by one, concurrently, for backends that cannot batch.

    Each request gets its own timeout; an exception becomes that request's
    ``Generation.error`` so the others still come back. At most
    ``max_concurrency`` requests of this batch are in flight, and, inside a
    guarded call, each also holds a slot of its guard's process-wide model
    limit (:func:`uq_guard._limits.current_model_limit`), so concurrent calls
    of one wrapper share one cap. Waiting for a slot does not count against
    the timeout.
    """
    semaphore = asyncio.Semaphore(max(1, max_concurrency))
    shared = current_model_limit()

    async def guarded(request: GenerationRequest) -> Generation:
        async with semaphore, shared or contextlib.nullcontext():
            try:
                return await asyncio.wait_for(answer_one(request), timeout_s)
            except asyncio.TimeoutError:
                return Generation(error=TimeoutError(f"model call timed out after {timeout_s}s"))
            except Exception as exc:  # one failure must not sink the batch
                return Generation(error=exc)

    return list(await asyncio.gather(*(guarded(r) for r in requests)))


def answers_independently(backend: object) -> bool:
    """Whether ``backend`` answers each request on its own, as an API does.

    Such a backend (class attribute ``independent_requests = True``) loses
    nothing when a round is split, so a guard asks it for the reply before
    the perturbed prompts exist. Any other backend (a local model batching
    the round into one ``generate``) gets each round whole.
    """
    return bool(getattr(backend, "independent_requests", False))


def is_backend(obj: object) -> bool:
    """Whether ``obj`` implements :class:`Backend` (an *async* ``generate``).

    Stricter than ``isinstance(obj, Backend)``, which only checks that a
    ``generate`` attribute exists: LangChain models have a sync one. A class
    whose ``generate`` serves both (``uq_guard_hf.HuggingFaceChatModel``
    returns a coroutine when given requests) says so with a class attribute
    ``is_uq_guard_backend = True``.
    """
    if getattr(type(obj), "is_uq_guard_backend", False):
        return True
    return inspect.iscoroutinefunction(getattr(obj, "generate", None))
