"""Issue 11's "Done when" lines that the other proxy tests leave open, counted at the upstream.

* The 9,941-call body: refused before any upstream call whatever the
  operator allows, and, were the pre-check's estimate ever wrong, held to
  the server's call cap while it runs.
* A 200-request burst at the default limits: every answer is served or a 503
  with ``Retry-After``.
* Cancellation also for a streaming client and for a client that gives up
  while its request waits in the queue.
* A credential canary: the real ``uq-guard serve`` process, logging at its
  most verbose (``-v``: httpx logs every upstream URL), behind an upstream that quotes
  its credentials in its errors; no key or password in any response or log line.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from uq_guard_server import ServerSettings
from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS, ServerPolicy

from tests.integration.test_server import QUESTION, SMALL
from tests.integration.test_server_safety import (
    SLOW_POLICY,
    SLOW_SETTINGS,
    assert_openai_error,
    calls_after,
    chat,
    post,
    proxy,
)
from tests.support.serve import start_serve, stop_serve
from tests.support.upstream import MODEL, Reply, ScriptedUpstream, is_sample
from uq_guard import GuardConfig

BODY_9941 = {"n_perturbations": 100, "n_samples": 100, "max_concurrency": 1024}
"""The per-request settings that made 9,941 upstream calls before issue 11."""
GAAP = GuardConfig.build(SMALL, perturbation="gaap", n_perturbations=2)
LENIENT = ServerPolicy.allowing(
    [*DEFAULT_ALLOWED_SETTINGS, "max_concurrency"], max_request_concurrency=1024
)


# -- no request makes more upstream calls than the cap ---------------------------------


@pytest.mark.parametrize("policy", [ServerPolicy(), LENIENT], ids=["default", "lenient"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_9941_call_body_is_refused_before_any_upstream_call(
    upstream: ScriptedUpstream, policy: ServerPolicy, stream: bool
) -> None:
    with proxy(upstream.base_url, guard=GAAP, policy=policy) as url:
        response = post(url, chat(stream=stream, uq_guard=BODY_9941))
    error = assert_openai_error(response, 400)
    assert error["param"].startswith("uq_guard")
    assert error["code"] in ("setting_not_allowed", "over_server_cap")
    assert upstream.bodies == []


class _WrongEstimate(ServerPolicy):
    """A policy whose pre-check lets everything through, as if it underestimated a request."""

    def check_cost(self, config: GuardConfig, reply_max_tokens: int | None) -> None:
        return None


def test_the_call_cap_holds_while_the_9941_call_body_runs(upstream: ScriptedUpstream) -> None:
    policy = _WrongEstimate(allowed_settings=LENIENT.allowed_settings, max_request_concurrency=1024)
    with proxy(upstream.base_url, guard=GAAP, policy=policy) as url:
        response = post(url, chat(uq_guard=BODY_9941))
        made = len(upstream.bodies)
        time.sleep(1.0)
    # GAAP made its perturbations, so thousands of samples were asked for: the cap stopped them
    assert response.status_code in (200, 502), response.text
    if response.status_code == 200:
        assert response.json()["uncertainty"]["degraded"] is True
    else:
        assert response.json()["error"]["code"] == "upstream_call_cap"
    assert made == len(upstream.bodies) == policy.max_upstream_calls


# -- backpressure ------------------------------------------------------------------------


def test_a_200_request_burst_at_the_default_limits_is_served_or_told_to_retry() -> None:
    async def burst(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            calls = [http.post(f"{url}/v1/chat/completions", json=chat()) for _ in range(200)]
            return list(await asyncio.gather(*calls))

    defaults = ServerSettings(guard=SMALL)
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.3) as slow,
        proxy(slow.base_url) as url,
    ):
        responses = asyncio.run(burst(url))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    # every request that found a slot or a queue place was served
    assert statuses[200] >= defaults.max_active_requests + defaults.max_queue
    busy = [r for r in responses if r.status_code == 503]
    assert busy and all(r.headers.get("retry-after") == "1" for r in busy)
    assert {r.json()["error"]["code"] for r in busy} == {"queue_full"}


# -- cancellation ------------------------------------------------------------------------


def test_a_streaming_client_that_disconnects_stops_the_upstream_calls_within_a_second() -> None:
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.4) as slow,
        proxy(slow.base_url, policy=SLOW_POLICY) as url,
    ):
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json=chat(stream=True, uq_guard=SLOW_SETTINGS),
                timeout=1.0,
            ) as response,
        ):
            response.read()
        soon, later = calls_after(slow, time.monotonic())
    assert soon == later < 9


def test_a_client_that_gives_up_in_the_queue_never_reaches_the_upstream() -> None:
    # one slot: the first request (1 reply + 8 samples, 0.4 s each, one at a time) holds it
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.4) as slow,
        proxy(slow.base_url, policy=SLOW_POLICY, max_active_requests=1, max_queue=1) as url,
    ):
        first = threading.Thread(target=post, args=(url, chat(uq_guard=SLOW_SETTINGS)))
        first.start()
        time.sleep(0.3)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=0.5)
        first.join()
        time.sleep(1.0)
        metrics = httpx.get(f"{url}/metrics").text
    assert len(slow.bodies) == 9  # the first request's own calls, none for the second
    assert 'uq_guard_errors_total{type="client_disconnected"} 1.0' in metrics


# -- a credential canary ----------------------------------------------------------------

UPSTREAM_KEY = "sk-canaryUpstream7f3a9c"
CLIENT_KEY = "canary-client-4b1e8d"
PASSWORD = "canaryPassword92kq"
CANARIES = (UPSTREAM_KEY, CLIENT_KEY, PASSWORD)
LEAK = f"denied for Bearer {UPSTREAM_KEY} at http://admin:{PASSWORD}@10.0.0.7/v1 (tenant-42)"


def _leaky_upstream(body: dict[str, Any], index: int) -> Reply | None:
    """Failures that quote the credentials: the reply as its question asks, a sample in three."""
    question = str(body["messages"][-1]["content"])
    if is_sample(body):
        return Reply(500, {"error": {"message": LEAK}}) if index % 3 == 0 else None
    if "500" in question:
        return Reply(500, {"error": {"message": LEAK}})
    if "429" in question:
        return Reply(429, {"error": {"message": LEAK}}, headers={"retry-after": "0"})
    if "garbage" in question:
        return Reply(body=LEAK.encode())
    return None


def _start_serve(upstream_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    settings = [
        "perturbation=none",
        "n_perturbations=0",
        "n_samples=2",
        "max_tokens=24",
        "max_retries=1",
        "retry_wait_s=0.01",
    ]
    env = {"OPENAI_API_KEY": UPSTREAM_KEY, "UQ_GUARD_API_KEY": CLIENT_KEY}
    options = ["--upstream", upstream_url, *(f"--set={s}" for s in settings)]
    return start_serve(options, log, env=env)


def _exchange(url: str) -> list[httpx.Response]:
    """Every kind of answer the proxy gives, with the client key unless the case is about it."""
    key = {"authorization": f"Bearer {CLIENT_KEY}"}
    responses = []
    with httpx.Client(base_url=url, timeout=60, headers=key) as http:
        for fault in ("500", "429", "garbage", "none", "none", "none"):
            question = [{"role": "user", "content": f"What is the capital of France? ({fault})"}]
            responses.append(http.post("/v1/chat/completions", json=chat(messages=question)))
        responses.append(http.post("/v1/chat/completions", json=chat(stream=True)))
        responses.append(
            http.post("/v1/chat/completions", json=chat(uq_guard={"include_samples": True}))
        )
        raise_ = {"policy": "raise", "threshold": 1.0}
        responses.append(http.post("/v1/chat/completions", json=chat(uq_guard=raise_)))
        responses.append(http.post("/v1/chat/completions", json=chat(extra_headers={"x": "y"})))
        responses.append(http.post("/v1/chat/completions", content=b"{not json"))
        responses.append(http.post("/v1/chat/completions", json=chat(model="no-such-model")))
        for path in ("/health", "/metrics", "/v1/models", "/openapi.json", "/nowhere"):
            responses.append(http.get(path))
        responses.append(http.get("/health", headers={"authorization": ""}))
        responses.append(
            http.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"})
        )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)
    for _ in range(4):
        try:
            raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
            responses.append(raw.http_response)
        except openai.APIStatusError as exc:
            responses.append(exc.response)
    return responses


@pytest.mark.slow
def test_no_credential_in_any_response_or_log_line(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with ScriptedUpstream(honour_n=False, script=_leaky_upstream) as upstream:
        with_password = upstream.base_url.replace("http://", f"http://admin:{PASSWORD}@")
        process, url = _start_serve(with_password, log)
        try:
            responses = _exchange(url)
        finally:
            stop_serve(process)
        calls = len(upstream.bodies)
    statuses = Counter(r.status_code for r in responses)
    # the exchange reached every kind of answer, upstream faults included
    assert {200, 400, 401, 404, 429, 502} <= set(statuses), statuses
    assert calls > 10
    logged = log.read_text(errors="replace")
    # the upstream's error text did reach the log (redacted), so the log was looked at
    assert "tenant-42" in logged and "upstream failure" in logged
    for response in responses:
        shown = response.text + repr(sorted(response.headers.items()))
        for canary in CANARIES:
            assert canary not in shown, (response.request.url, response.status_code)
        assert "tenant-42" not in shown
    leaked = [line for line in logged.splitlines() if any(c in line for c in CANARIES)]
    assert leaked == []


def test_uvicorns_own_log_lines_are_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import uvicorn
    from uq_guard_server.serve import install_redaction

    uvicorn.Config(app=None, log_level="warning")  # as `uq-guard serve` does: uvicorn's handlers
    install_redaction([CLIENT_KEY])
    logging.getLogger("uvicorn.error").error(
        "Exception in ASGI application: %s at http://admin:%s@h/v1", CLIENT_KEY, PASSWORD
    )
    shown = capsys.readouterr().err
    assert "Exception in ASGI application" in shown
    assert CLIENT_KEY not in shown and PASSWORD not in shown
