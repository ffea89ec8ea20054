"""The default ``max_concurrency``: one guarded call is one round, and rate limits are retried.

At the defaults (10 prompts × 5 samples) a call to a server that ignores ``n``
sends 51 requests; ``max_concurrency=64`` lets them all go at once
(``benchmarks/results/performance/concurrency.md``). A provider that answers
part of the burst with 429 costs retries, not samples: the engine resends
them after the server's ``Retry-After`` (``uq_guard._retry``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
from uq_guard_openai import wrap_openai
from uq_guard_openai.stream import _http_module

from tests.support.upstream import completion
from tests.unit.fake_backend import ANSWER, QUESTION, FakeBackend
from tests.unit.model_free_parts import FixedVariants, HashingEmbedder
from uq_guard import Guard, GuardConfig
from uq_guard.config_sections import TransportSettings

HTTP = _http_module(openai.OpenAI(api_key="unused"))
MESSAGES = [{"role": "user", "content": QUESTION}]
DEFAULT_REQUESTS = 1 + 10 * 5  # the reply, and 5 samples of 10 prompts, one request each


PARTS = {"embedder": HashingEmbedder(), "perturber": FixedVariants()}


class BurstServer:
    """Ignores ``n`` like llama.cpp; each request takes ``delay_s``.

    With ``limit`` it rate-limits like a provider: a request arriving while
    ``limit`` are being answered gets a 429 with ``Retry-After``.
    """

    def __init__(self, *, delay_s: float = 0.05, limit: int | None = None) -> None:
        self.delay_s, self.limit = delay_s, limit
        self.in_flight = self.most_in_flight = self.rate_limited = 0
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.limit is not None and self.in_flight >= self.limit:
            self.rate_limited += 1
            return HTTP.Response(
                429,
                headers={"retry-after": "0.05"},
                json={"error": {"message": "rate limited", "type": "rate_limit_exceeded"}},
            )
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return HTTP.Response(200, json=completion([ANSWER], logprobs=bool(body.get("logprobs"))))

    def client(self, **config: Any) -> openai.AsyncOpenAI:
        raw = openai.AsyncOpenAI(
            api_key="test",
            base_url="http://fake.test/v1",
            max_retries=2,  # the user's own client: the SDK retries the reply
            http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(self.handle)),
        )
        return wrap_openai(raw, **PARTS, **config)


def test_the_default_lets_a_default_call_go_in_one_round() -> None:
    config = GuardConfig()
    assert config.max_concurrency == TransportSettings().max_concurrency == 64
    requests = 1 + (config.n_perturbations + 1) * config.n_samples
    assert requests == DEFAULT_REQUESTS <= config.max_concurrency


def test_the_proxy_lets_a_default_request_go_in_one_round_within_its_call_cap() -> None:
    from uq_guard_server.policy import ServerPolicy, upstream_calls

    policy = ServerPolicy()
    # a client cannot raise it: max_concurrency is not in the default allow-list
    assert "max_concurrency" not in policy.allowed_settings
    assert upstream_calls(GuardConfig()) <= policy.max_request_concurrency
    assert policy.max_request_concurrency <= policy.max_upstream_calls == 64


def test_a_guard_holds_a_cap_of_the_default_size() -> None:
    assert Guard(FakeBackend(), **PARTS).model_limit.limit == 64


async def test_a_default_call_sends_every_request_at_once() -> None:
    server = BurstServer()
    client = server.client()

    await client.chat.completions.create(model="m", messages=MESSAGES)  # learns: n is ignored
    server.most_in_flight = 0
    resp = await client.chat.completions.create(model="m", messages=MESSAGES)

    assert resp.uncertainty.n_samples == 50 and not resp.uncertainty.degraded
    assert server.most_in_flight == DEFAULT_REQUESTS  # one round, no waves


async def test_a_smaller_cap_still_holds() -> None:
    server = BurstServer()
    client = server.client(max_concurrency=8)

    resp = await client.chat.completions.create(model="m", messages=MESSAGES)

    assert resp.uncertainty.n_samples == 50
    assert server.most_in_flight == 8


async def test_a_burst_over_the_providers_limit_is_retried_not_lost() -> None:
    server = BurstServer(limit=20)
    client = server.client(retry_wait_s=0.01)

    resp = await client.chat.completions.create(model="m", messages=MESSAGES)

    report = resp.uncertainty
    assert server.rate_limited > 0  # the burst met the limit...
    assert report.n_samples == 50 and report.n_failed == 0  # ...and lost no sample
    assert not report.degraded, report.degraded_reasons
    assert len(server.bodies) > DEFAULT_REQUESTS  # the 429s were sent again


async def test_without_retries_a_rate_limited_burst_degrades_the_report() -> None:
    server = BurstServer(limit=20)
    client = server.client(max_retries=0)

    resp = await client.chat.completions.create(model="m", messages=MESSAGES)

    report = resp.uncertainty
    assert report.n_failed > 0 and report.degraded
    assert any("rate limited" in reason for reason in report.degraded_reasons)
