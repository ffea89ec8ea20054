"""Retries of failed model requests: the one place they live.

A backend reports failures per request; :func:`generate_with_retries` sends
the retryable ones again (with exponential backoff that honours a server's
``Retry-After``) and leaves the rest failed. A request that came back with
only some of its ``n`` answers and a retryable error is sent again for the
missing answers only; the answers it got are kept. Which errors are retryable is
decided by duck typing, so the engine needs no SDK import: rate limits,
timeouts, connection errors and 5xx are; bad requests and auth errors are not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from uq_guard._limits import ConcurrencyLimit, model_limit
from uq_guard.backend import Backend, Generation, GenerationRequest

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
RETRYABLE_NAMES = frozenset(
    {
        "RateLimitError",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
        "Timeout",
        "ConnectError",
        "ReadTimeout",
        "TimeoutException",
        "NetworkError",
        "RemoteProtocolError",
    }
)


def _status_code(exc: BaseException) -> int | None:
    for owner in (exc, getattr(exc, "response", None)):
        code = getattr(owner, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def is_retryable(exc: BaseException | None) -> bool:
    """Whether sending the same request again may succeed."""
    if exc is None:
        return False
    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return explicit
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if any(cls.__name__ in RETRYABLE_NAMES for cls in type(exc).__mro__):
        return True
    code = _status_code(exc)
    return code is not None and code in RETRYABLE_STATUS


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's ``Retry-After`` (seconds) carried by an exception, if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def backoff_honouring_retry_after(
    first_wait_s: float,
    max_wait_s: float,
    server_says: Callable[[RetryCallState], float | None],
) -> Callable[[RetryCallState], float]:
    """A tenacity ``wait``: exponential backoff, or longer when the server's
    ``Retry-After`` (what ``server_says`` reads off the failed attempt) asks so,
    never over ``max_wait_s``."""
    backoff = wait_exponential(multiplier=first_wait_s, max=max_wait_s)

    def wait(state: RetryCallState) -> float:
        return min(max_wait_s, max(backoff(state), server_says(state) or 0.0))

    return wait


async def generate_with_retries(
    backend: Backend,
    requests: Sequence[GenerationRequest],
    *,
    max_retries: int,
    first_wait_s: float,
    timeout_s: float | None,
    max_wait_s: float = 30.0,
) -> list[Generation]:
    """Answer ``requests``; resend the retryable failures up to ``max_retries`` times.

    A wholly failed request is sent again as it was. A partly answered one
    (some of its ``n`` answers and a retryable error, as when one of the
    per-answer calls of a backend without ``n`` failed) keeps what it got and
    is sent again for the missing answers only, so one failed sample in a good
    batch costs one more call, not a degraded report. Every resend of every
    request shares the one budget of ``max_retries`` rounds.

    Never raises for a failed request: the last failure stays in its
    ``Generation.error``. A backend that raises as a whole counts as every
    request failing with that exception. Usage of failed attempts is kept.
    """
    results: list[Generation] = [Generation() for _ in requests]
    spent = [Generation().usage for _ in requests]
    pending = list(range(len(requests)))
    resends = 0

    def server_says(_: RetryCallState) -> float:
        hinted = [retry_after_seconds(results[i].error) for i in pending]
        return max((h for h in hinted if h is not None), default=0.0)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=backoff_honouring_retry_after(first_wait_s, max_wait_s, server_says),
        retry=retry_if_result(bool),
        # Out of attempts: stop quietly; the failures stay in ``results``.
        retry_error_callback=lambda state: None,
    )
    async for attempt in retrying:
        with attempt:
            batch = [_missing_part(requests[i], results[i], resends) for i in pending]
            answers = await _generate_round(backend, batch, timeout_s)
            for index, answer in zip(pending, answers, strict=True):
                spent[index] = spent[index] + answer.usage
                results[index] = _merged(results[index], answer)
            resends += 1
            pending = [i for i in pending if _wants_resend(requests[i], results[i])]
            if pending and attempt.retry_state.attempt_number <= max_retries:
                logger.info(
                    "retrying %d failed request(s): %s", len(pending), results[pending[0]].error
                )
        if not attempt.retry_state.outcome.failed:  # tenacity's pattern for retry_if_result
            attempt.retry_state.set_result(pending)
    for index, result in enumerate(results):
        result.usage = spent[index]
    return results


def _wants_resend(request: GenerationRequest, result: Generation) -> bool:
    """Whether some of ``request``'s answers are missing after a retryable failure."""
    return len(result.texts) < request.n and is_retryable(result.error)


def _missing_part(request: GenerationRequest, got: Generation, resends: int) -> GenerationRequest:
    """``request`` as it is, or, when some answers came back, a request for the rest."""
    if not got.texts:
        return request
    # A seeded backend (the local model) would draw the answers already kept all over
    # again: each resend gets a sampling seed of its own.
    return dataclasses.replace(
        request,
        n=request.n - len(got.texts),
        seed_offset=request.seed_offset + _RESEND_SEED_STRIDE * (resends + 1),
    )


#: Far from the small offsets of the sampling rounds (0, 1), so a resend never repeats one.
_RESEND_SEED_STRIDE = 1_000_003


def _merged(kept: Generation, answer: Generation) -> Generation:
    """What a request has after ``answer``: the answers kept so far, then the new ones."""
    if not kept.texts:
        return answer
    return Generation(
        texts=[*kept.texts, *answer.texts],
        token_logprobs=_joined(kept.token_logprobs, answer.token_logprobs, answer.texts),
        token_entropies=_joined(kept.token_entropies, answer.token_entropies, answer.texts),
        raw=[*kept.raw, *answer.raw],
        usage=answer.usage,  # the caller sums usage over attempts
        error=answer.error,
    )


def _joined(
    kept: list[list[float]] | None, new: list[list[float]] | None, new_texts: list[str]
) -> list[list[float]] | None:
    """Per-answer values of both parts, or None when one part lacks them (they must align)."""
    if not new_texts:
        return kept
    if kept is None or new is None:
        return None
    return [*kept, *new]


async def _generate_round(
    backend: Backend, requests: Sequence[GenerationRequest], timeout_s: float | None
) -> list[Generation]:
    # The per-request timeout is the backend's job; this outer limit only
    # stops a backend that hangs as a whole (one batched local generate).
    outer = None if timeout_s is None else timeout_s * max(1, len(requests))
    try:
        answers = await asyncio.wait_for(backend.generate(list(requests)), outer)
    except asyncio.TimeoutError:
        error = TimeoutError(f"model round of {len(requests)} request(s) timed out")
        return [Generation(error=error) for _ in requests]
    except Exception as exc:
        return [Generation(error=exc) for _ in requests]
    if len(answers) != len(requests):
        error = RuntimeError(
            f"backend returned {len(answers)} generations for {len(requests)} requests"
        )
        return [Generation(error=error) for _ in requests]
    return answers


class RetryingBackend:
    """A :class:`Backend` that retries the retryable failures of another one.

    Args:
        backend: the backend to call.
        max_retries / first_wait_s / timeout_s: see :func:`generate_with_retries`.
        limit: the guard's process-wide cap on model requests in flight; it is
            the ambient limit (:func:`uq_guard._limits.model_limit`) while
            ``backend`` runs, so a backend that sends one request per answer
            (:func:`uq_guard.backend.fan_out`) holds one of its slots per request.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_retries: int,
        first_wait_s: float,
        timeout_s: float | None,
        limit: ConcurrencyLimit | None = None,
    ) -> None:
        self.backend = backend
        self.max_retries = max_retries
        self.first_wait_s = first_wait_s
        self.timeout_s = timeout_s
        self.limit = limit

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        with model_limit(self.limit):
            return await generate_with_retries(
                self.backend,
                requests,
                max_retries=self.max_retries,
                first_wait_s=self.first_wait_s,
                timeout_s=self.timeout_s,
            )
