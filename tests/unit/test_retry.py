"""Retries of failed model requests (``uq_guard._retry``).

Retryable failures (rate limits, timeouts, connection errors, 5xx) are sent
again, honouring ``Retry-After``; the rest stay failed. Nothing here ever
raises for a failed request: the failure lands in ``Generation.error``.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from tests.unit.fake_backend import FakeBackend, prompt_of
from uq_guard._retry import (
    RetryingBackend,
    generate_with_retries,
    is_retryable,
    retry_after_seconds,
)
from uq_guard.backend import Generation, GenerationRequest


def request(text: str, n: int = 1) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), n=n, temperature=0.7)


class HTTPError(Exception):
    """An SDK-style status error: ``status_code`` and a ``response`` with headers."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.response = SimpleNamespace(status_code=status_code, headers=headers or {})


def too_many_requests(retry_after: str | None = None) -> HTTPError:
    return HTTPError(429, {"retry-after": retry_after} if retry_after is not None else {})


async def answer(
    backend,
    requests,
    *,
    max_retries: int = 3,
    first_wait_s: float = 0.0,
    timeout_s: float | None = None,
    **kwargs,
) -> list[Generation]:
    return await generate_with_retries(
        backend,
        requests,
        max_retries=max_retries,
        first_wait_s=first_wait_s,
        timeout_s=timeout_s,
        **kwargs,
    )


# -- the retry loop ----------------------------------------------------------


async def test_a_rate_limited_request_is_retried_and_succeeds() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=2)

    [result] = await answer(backend, [request("q")])

    assert result.ok
    assert result.texts == ["ok"]
    assert result.error is None
    assert backend.calls == 3


async def test_retry_after_is_honoured() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0.05"), times=1)

    started = time.perf_counter()
    [result] = await answer(backend, [request("q")], first_wait_s=0.0)
    waited = time.perf_counter() - started

    assert result.ok
    assert waited >= 0.04


async def test_retry_after_is_capped_by_max_wait() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("3600"), times=1)

    started = time.perf_counter()
    [result] = await answer(backend, [request("q")], max_wait_s=0.05)

    assert result.ok
    assert time.perf_counter() - started < 2.0


async def test_a_bad_request_is_not_retried() -> None:
    error = HTTPError(400)
    backend = FakeBackend("ok").fail("q", error, times=None)

    [result] = await answer(backend, [request("q")])

    assert not result.ok
    assert result.error is error
    assert result.texts == []
    assert backend.calls == 1


async def test_retries_stop_after_max_retries_and_keep_the_last_error() -> None:
    backend = FakeBackend("ok").fail("q", HTTPError(503), times=None)

    [result] = await answer(backend, [request("q")], max_retries=2)

    assert backend.calls == 3  # the first try and two retries
    assert not result.ok
    assert isinstance(result.error, HTTPError) and result.error.status_code == 503


async def test_max_retries_zero_sends_each_request_once() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=None)

    [result] = await answer(backend, [request("q")], max_retries=0)

    assert backend.calls == 1
    assert not result.ok


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError("read timed out"),
        ConnectionError("reset by peer"),
        ConnectionRefusedError("refused"),
        asyncio.TimeoutError(),
    ],
)
async def test_timeouts_and_connection_errors_are_retried(error: Exception) -> None:
    backend = FakeBackend("ok").fail("q", error, times=1)

    [result] = await answer(backend, [request("q")])

    assert result.ok
    assert backend.calls == 2


async def test_only_the_failed_requests_are_sent_again() -> None:
    backend = FakeBackend("ok").fail("b", too_many_requests("0"), times=1)

    results = await answer(backend, [request("a"), request("b"), request("c")])

    assert all(r.ok for r in results)
    assert [[prompt_of(r) for r in batch] for batch in backend.rounds] == [["a", "b", "c"], ["b"]]


async def test_results_stay_in_request_order_after_retries() -> None:
    backend = FakeBackend(lambda prompt, i: f"answer to {prompt}")
    backend.fail("a", too_many_requests("0"), times=1)

    results = await answer(backend, [request("a"), request("b")])

    assert [r.texts for r in results] == [["answer to a"], ["answer to b"]]


async def test_a_partly_answered_request_is_sent_again_for_the_missing_answers_only() -> None:
    """One failed answer of five (a backend without ``n`` makes one call per answer)."""
    backend = FakeBackend(lambda prompt, i: f"answer {i}")
    backend.fail("q", too_many_requests("0"), times=1, keep=4)

    [result] = await answer(backend, [request("q", n=5)])

    assert result.ok and result.error is None
    assert result.texts == [f"answer {i}" for i in range(5)]  # the four kept, then one more
    assert [r.n for r in backend.requests] == [5, 1]
    assert result.usage.model_calls == 2


async def test_a_resend_of_missing_answers_gets_its_own_sampling_seed() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=1, keep=2)

    await answer(backend, [request("q", n=3)])

    first, resend = backend.requests
    assert first.seed_offset == 0 and resend.seed_offset != 0  # no repeat of the kept draws


async def test_a_partly_answered_request_keeps_trying_within_the_budget() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=None, keep=1)

    [result] = await answer(backend, [request("q", n=5)], max_retries=2)

    # each try returns one answer and fails the rest: 1 + 1 + 1 answers in three calls
    assert [r.n for r in backend.requests] == [5, 4, 3]
    assert result.texts == ["ok"] * 3
    assert isinstance(result.error, HTTPError)  # still short: the failure is reported
    assert not result.ok


async def test_a_partly_answered_request_with_a_final_error_is_not_sent_again() -> None:
    backend = FakeBackend("ok").fail("q", HTTPError(400), times=None, keep=2)

    [result] = await answer(backend, [request("q", n=5)])

    assert backend.calls == 1
    assert result.texts == ["ok", "ok"]
    assert isinstance(result.error, HTTPError)
    assert not result.ok


async def test_only_the_short_request_of_a_batch_is_sent_again() -> None:
    backend = FakeBackend("ok").fail("b", too_many_requests("0"), times=1, keep=2)

    results = await answer(backend, [request("a", n=3), request("b", n=3), request("c", n=3)])

    assert [len(r.texts) for r in results] == [3, 3, 3]
    assert all(r.ok for r in results)
    assert [[(prompt_of(r), r.n) for r in batch] for batch in backend.rounds] == [
        [("a", 3), ("b", 3), ("c", 3)],
        [("b", 1)],
    ]


async def test_usage_of_failed_attempts_is_kept() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=2)

    [result] = await answer(backend, [request("q")])

    assert result.usage.model_calls == 3
    assert result.usage.prompt_tokens == 30


async def test_a_backend_that_raises_as_a_whole_fails_every_request() -> None:
    error = PermissionError("invalid api key")
    backend = FakeBackend("ok")
    backend.raise_on_generate = error

    results = await answer(backend, [request("a"), request("b")])

    assert len(results) == 2
    assert all(r.error is error and not r.texts for r in results)
    assert len(backend.rounds) == 1  # not retryable


async def test_a_backend_that_raises_a_retryable_error_as_a_whole_is_retried() -> None:
    class FlakyOnce(FakeBackend):
        async def generate(self, requests):
            if not self.rounds:
                self.rounds.append(list(requests))
                raise ConnectionError("connection reset")
            return await super().generate(requests)

    backend = FlakyOnce("ok")

    results = await answer(backend, [request("a"), request("b")])

    assert all(r.ok for r in results)
    assert len(backend.rounds) == 2


async def test_a_backend_returning_the_wrong_number_of_generations_is_handled() -> None:
    backend = FakeBackend("ok")
    backend.drop_last_generation = True

    results = await answer(backend, [request("a"), request("b"), request("c")])

    assert len(results) == 3
    assert all(not r.ok for r in results)
    assert "2 generations for 3 requests" in str(results[0].error)


async def test_a_hanging_backend_is_stopped_by_the_timeout() -> None:
    backend = FakeBackend("ok")
    backend.delay_s = 5.0

    started = time.perf_counter()
    [result] = await answer(backend, [request("q")], max_retries=0, timeout_s=0.05)

    assert time.perf_counter() - started < 2.0
    assert isinstance(result.error, TimeoutError)
    assert not result.ok


async def test_cancelling_the_caller_cancels_the_request_and_sends_nothing_more() -> None:
    """A caller's own deadline (``asyncio.wait_for``) must win over the retry loop."""
    backend = FakeBackend("ok")
    backend.delay_s = 0.3

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(answer(backend, [request("q")]), 0.05)

    await asyncio.sleep(0.4)
    assert backend.calls == 1


async def test_retrying_backend_is_a_backend_with_the_same_behaviour() -> None:
    backend = FakeBackend("ok").fail("q", too_many_requests("0"), times=1)
    retrying = RetryingBackend(backend, max_retries=1, first_wait_s=0.0, timeout_s=None)

    [result] = await retrying.generate([request("q")])

    assert result.ok
    assert backend.calls == 2


# -- which errors are retryable ----------------------------------------------


def _named(name: str, base: type[Exception] = Exception) -> type[Exception]:
    """An exception class with an SDK's name, without importing the SDK."""
    return type(name, (base,), {})


@pytest.mark.parametrize(
    "name",
    [
        "RateLimitError",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
        "ReadTimeout",
        "ConnectError",
    ],
)
def test_sdk_errors_are_retryable_by_class_name(name: str) -> None:
    assert is_retryable(_named(name)("x"))


def test_a_subclass_of_a_retryable_sdk_error_is_retryable() -> None:
    rate_limit = _named("RateLimitError")
    assert is_retryable(_named("TokensPerMinuteError", rate_limit)("x"))


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(HTTPError(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retryable(status: int) -> None:
    assert not is_retryable(HTTPError(status))


@pytest.mark.parametrize(
    "name", ["BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError"]
)
def test_sdk_client_errors_are_not_retryable(name: str) -> None:
    error = _named(name)("x")
    error.status_code = {
        "BadRequestError": 400,
        "AuthenticationError": 401,
        "PermissionDeniedError": 403,
        "NotFoundError": 404,
    }[name]
    assert not is_retryable(error)


def test_a_status_only_on_the_response_is_read() -> None:
    error = Exception("upstream")
    error.response = SimpleNamespace(status_code=502, headers={})
    assert is_retryable(error)


def test_an_explicit_retryable_flag_wins() -> None:
    error = TimeoutError("deadline")
    error.retryable = False
    assert not is_retryable(error)

    other = ValueError("transient")
    other.retryable = True
    assert is_retryable(other)


@pytest.mark.parametrize("error", [None, ValueError("bad"), KeyError("k"), RuntimeError("x")])
def test_other_errors_are_not_retryable(error) -> None:
    assert not is_retryable(error)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "0.05"}, 0.05),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(HTTPError(429, headers)) == expected


def test_retry_after_without_a_response_is_none() -> None:
    assert retry_after_seconds(TimeoutError()) is None
    assert retry_after_seconds(None) is None


def test_every_kind_of_httpx_style_timeout_and_dropped_connection_is_retryable() -> None:
    """httpx's own hierarchy (what a hand-written HTTP backend raises), duck-typed."""
    transport_error = _named("TransportError")
    timeout = _named("TimeoutException", transport_error)
    network = _named("NetworkError", transport_error)

    for error in (
        _named("ConnectTimeout", timeout)("x"),
        _named("WriteTimeout", timeout)("x"),
        _named("PoolTimeout", timeout)("x"),
        _named("ReadTimeout", timeout)("x"),
        _named("ReadError", network)("x"),
        _named("ConnectError", network)("x"),
    ):
        assert is_retryable(error), type(error).__name__
