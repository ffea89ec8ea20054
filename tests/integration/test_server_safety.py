"""The proxy is safe to expose (ARCHITECTURE promise 5; issue 11), on uvicorn at 127.0.0.1.

Every request field is hostile: clients get only the settings the operator
allows, within the operator's caps; malformed requests get an OpenAI-shaped
4xx before any upstream call; nothing shown or logged carries a credential;
work is bounded (a queue with 503 + Retry-After) and stops when its client
goes or its time is up. Upstream calls are counted at the scripted upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from uq_guard_server import OpenAIUpstream, ServerSettings, create_app
from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS, ServerPolicy
from uq_guard_server.redact import redact, redact_url
from uq_guard_server.upstream import create_kwargs

from tests.integration.test_server import QUESTION, SMALL
from tests.support.serve import serving
from tests.support.upstream import MODEL, Reply, ScriptedUpstream, is_sample
from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError


def proxy(upstream_url: str, *, upstream_key: str | None = None, **settings: Any) -> Any:
    settings.setdefault("guard", SMALL)
    return serving(
        create_app(
            OpenAIUpstream(upstream_url, api_key=upstream_key),
            ServerSettings(upstream_key=upstream_key, **settings),
        )
    )


@pytest.fixture
def proxy_url(upstream: ScriptedUpstream) -> Iterator[str]:
    with proxy(upstream.base_url) as url:
        yield url


def post(url: str, body: dict[str, Any] | bytes | str, **headers: str) -> httpx.Response:
    content = json.dumps(body) if isinstance(body, dict) else body
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": QUESTION, **fields}


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


# -- server policy: allow-list and caps ---------------------------------------------


@pytest.mark.parametrize(
    ("settings", "param", "code"),
    [
        ({"gaap_delta": 0.1}, "uq_guard.gaap_delta", "setting_not_allowed"),
        ({"max_concurrency": 1024}, "uq_guard.max_concurrency", "setting_not_allowed"),
        ({"device": "cpu:1"}, "uq_guard.device", "operator_only"),
        ({"embedding_model": "no/such-model"}, "uq_guard.embedding_model", "operator_only"),
        ({"calibration": "/etc/passwd"}, "uq_guard.calibration", "operator_only"),
        ({"timeout_s": 1e9}, "uq_guard.timeout_s", "operator_only"),
        ({"max_retries": 20}, "uq_guard.max_retries", "operator_only"),
        ({"enabled": "false"}, "uq_guard.enabled", "invalid_type"),
        ({"n_samples": "3"}, "uq_guard.n_samples", "invalid_type"),
        ({"n_samples": True}, "uq_guard.n_samples", "invalid_type"),
        ({"include_samples": "yes"}, "uq_guard.include_samples", "invalid_type"),
        # the body that made 9,941 upstream calls: refused before one is made
        (
            {"n_perturbations": 100, "n_samples": 100, "max_concurrency": 1024},
            "uq_guard.max_concurrency",
            "setting_not_allowed",
        ),
        ({"n_perturbations": 100, "n_samples": 100}, "uq_guard", "over_server_cap"),
        ({"max_tokens": 4096, "n_samples": 10}, "uq_guard", "over_server_cap"),
    ],
)
def test_settings_outside_the_policy_get_400_before_any_upstream_call(
    upstream: ScriptedUpstream, proxy_url: str, settings: dict[str, Any], param: str, code: str
) -> None:
    error = assert_openai_error(post(proxy_url, chat(uq_guard=settings)), 400)
    assert (error["param"], error["code"]) == (param, code)
    assert param.removeprefix("uq_guard.") in error["message"] or "max_" in error["message"]
    assert upstream.bodies == []


def test_a_cap_is_named_in_the_error(proxy_url: str) -> None:
    calls = post(proxy_url, chat(uq_guard={"n_perturbations": 100, "n_samples": 100}))
    assert "max_upstream_calls=64" in calls.json()["error"]["message"]
    tokens = post(proxy_url, chat(max_tokens=10**9))
    assert "max_request_tokens" in assert_openai_error(tokens, 400)["message"]
    # forwarded as it was before: refused, whichever check sees it first
    assert_openai_error(post(proxy_url, chat(uq_guard={"max_tokens": 10**9})), 400)


def test_allowed_settings_still_work(upstream: ScriptedUpstream, proxy_url: str) -> None:
    response = post(proxy_url, chat(uq_guard={"n_samples": 3, "threshold": 0.2}))
    assert response.status_code == 200
    assert response.json()["uncertainty"]["n_samples"] == 3
    off = post(proxy_url, chat(uq_guard={"enabled": False}))
    assert off.status_code == 200 and "uncertainty" not in off.json()


def test_the_operator_chooses_the_allow_list(upstream: ScriptedUpstream) -> None:
    with proxy(upstream.base_url, policy=ServerPolicy.allowing(["policy"])) as url:
        assert post(url, chat(uq_guard={"policy": "abstain"})).status_code == 200
        error = assert_openai_error(post(url, chat(uq_guard={"n_samples": 3})), 400)
    assert error["code"] == "setting_not_allowed" and "allowed: policy" in error["message"]
    with pytest.raises(ConfigurationError, match="operator-only"):
        ServerPolicy.allowing(["device"])
    with pytest.raises(ConfigurationError, match="max_perturb_chars"):
        ServerPolicy(max_perturb_chars=0)
    with pytest.raises(ConfigurationError, match="max_upstream_calls"):
        ServerSettings(guard=GuardConfig(n_samples=20), policy=ServerPolicy(max_upstream_calls=10))


def test_retries_never_take_a_request_over_the_call_cap(upstream: ScriptedUpstream) -> None:
    # Every sample fails with a retryable 500: uncapped, 1 reply + 2 samples x 4 attempts = 9.
    upstream.script = lambda body, index: (
        Reply(500, {"error": {"message": "x"}}) if is_sample(body) else None
    )
    with proxy(upstream.base_url, policy=ServerPolicy(max_upstream_calls=5)) as url:
        response = post(url, chat())
    assert response.status_code == 200
    assert response.json()["uncertainty"]["degraded"] is True
    assert len(upstream.bodies) == 5


def test_one_request_keeps_to_the_concurrency_cap() -> None:
    policy = ServerPolicy(max_request_concurrency=1)
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.1) as slow,
        proxy(slow.base_url, policy=policy) as url,
    ):
        assert post(url, chat(uq_guard={"n_samples": 4})).status_code == 200
    assert len(slow.bodies) == 5 and slow.max_in_flight == 1


def test_each_request_has_its_own_concurrency_cap() -> None:
    # Two requests with the same settings share one Guard, not its cap: 2 + 2 in flight.
    policy = ServerPolicy(max_request_concurrency=2)
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.3) as slow,
        proxy(slow.base_url, policy=policy, max_active_requests=2) as url,
    ):
        statuses: list[int] = []
        requests = [
            threading.Thread(
                target=lambda: statuses.append(
                    post(url, chat(uq_guard={"n_samples": 4})).status_code
                )
            )
            for _ in range(2)
        ]
        for request in requests:
            request.start()
        for request in requests:
            request.join()
    assert statuses == [200, 200]
    assert len(slow.bodies) == 10 and slow.max_in_flight == 4


def test_a_long_prompt_is_sampled_but_not_perturbed(upstream: ScriptedUpstream) -> None:
    guard = SMALL.model_copy(update={"n_perturbations": 2, "perturbation": "gaap"})
    policy = ServerPolicy(max_perturb_chars=200)
    with proxy(upstream.base_url, guard=guard, policy=policy) as url:
        short = post(url, chat())
        long = post(url, chat(messages=[{"role": "user", "content": "Where is Paris? " * 20}]))
    assert "x-uq-guard-note" not in short.headers
    assert short.json()["uncertainty"]["n_perturbations_requested"] == 2
    assert long.status_code == 200
    assert long.headers["x-uq-guard-note"].startswith("perturbation skipped")
    report = long.json()["uncertainty"]
    assert report["n_perturbations_requested"] == 0 and report["n_prompts"] == 1


def test_sdk_controls_in_a_body_never_reach_the_sdk() -> None:
    body = chat(extra_headers={"authorization": "x"}, extra_query={"a": 1}, timeout=1, top_k=3)
    body["extra_body"] = {"b": 2}
    kwargs = create_kwargs(body)
    assert not {"extra_headers", "extra_query", "timeout"} & set(kwargs)
    assert kwargs["extra_body"] == {"top_k": 3}


# -- malformed requests: 4xx before any upstream call ---------------------------------


def raw_chat(tail: str, messages: str = json.dumps(QUESTION)) -> str:
    """A chat body as JSON text, ``tail`` added raw (for what json.dumps cannot write)."""
    return f'{{"model": "{MODEL}", "messages": {messages}{tail}}}'


NESTED = raw_chat(', "metadata": ' + "[" * 40 + "]" * 40)
SURROGATE = raw_chat("", messages='[{"role": "user", "content": "\\ud800"}]')
NAN = raw_chat(', "temperature": NaN')


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[" * 100_000, None),
        (NESTED, None),
        (SURROGATE, None),
        (NAN, None),
        (chat(temperature="hot"), "temperature"),
        (chat(stream=True, stream_options="x"), "stream_options"),
        (chat(stream_options={"include_usage": True}), "stream_options"),
        (chat(timeout="x"), "timeout"),
        (chat(extra_headers=5), "extra_headers"),
        (chat(extra_query=5), "extra_query"),
        (chat(extra_body={"x": 1}), "extra_body"),
        (chat(n=True), "n"),
        (chat(max_tokens="5"), "max_tokens"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages"),
        (chat(uq_guard={"device": "cuda:99"}), "uq_guard.device"),
        (chat(uq_guard={"device": "toaster"}), "uq_guard.device"),
        (chat(uq_guard={"device": "CPU"}), "uq_guard.device"),
        (chat(uq_guard={"embedding_model": "/etc"}), "uq_guard.embedding_model"),
    ],
    ids=[
        "nested-100000",
        "nested-40",
        "lone-surrogate",
        "nan",
        "temperature-string",
        "stream-options-string",
        "stream-options-without-stream",
        "timeout",
        "extra-headers",
        "extra-query",
        "extra-body",
        "n-bool",
        "max-tokens-string",
        "content-number",
        "device-cuda99",
        "device-toaster",
        "device-CPU",
        "embedding-model-etc",
    ],
)
def test_malformed_requests_get_4xx_before_any_upstream_call(
    upstream: ScriptedUpstream, proxy_url: str, body: Any, param: str | None
) -> None:
    error = assert_openai_error(post(proxy_url, body), 400)
    assert error["param"] == param
    assert upstream.bodies == []
    assert httpx.get(f"{proxy_url}/health").status_code == 200


# -- no leaks --------------------------------------------------------------------------


def test_health_redacts_the_upstream_and_keeps_details_behind_the_key(
    upstream: ScriptedUpstream,
) -> None:
    url_with_credentials = upstream.base_url.replace("http://", "http://user:pw@")
    with proxy(url_with_credentials) as url:
        shown = httpx.get(f"{url}/health").json()
        assert shown["status"] == "ok" and "pw" not in shown["upstream"]
        assert shown["upstream"].startswith("http://***@127.0.0.1")
    with proxy(url_with_credentials, api_key="sesame") as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        keyed = httpx.get(f"{url}/health", headers={"authorization": "Bearer sesame"}).json()
        assert "upstream" in keyed and "pw" not in keyed["upstream"]
        assert httpx.get(f"{url}/metrics").status_code == 401
        metrics = httpx.get(f"{url}/metrics", headers={"authorization": "Bearer sesame"})
        assert metrics.status_code == 200 and "uq_guard_requests_total" in metrics.text


CANARY_KEY = "sk-canary0123456789"


def test_upstream_error_text_stays_in_the_log_redacted(
    upstream: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    leaky = f"boom at http://user:pw@internal/v1 with {CANARY_KEY} for tenant-42"
    upstream.script = lambda body, index: Reply(500, {"error": {"message": leaky}})
    caplog.set_level(logging.WARNING, logger="uq_guard_server")
    guard = SMALL.model_copy(update={"max_retries": 0})
    with proxy(upstream.base_url, guard=guard, upstream_key=CANARY_KEY) as url:
        response = post(url, chat())
    error = assert_openai_error(response, 502)
    assert "tenant-42" not in response.text and "boom" not in response.text
    assert response.headers["x-request-id"] in error["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "tenant-42" in logged and response.headers["x-request-id"] in logged
    assert CANARY_KEY not in logged and "pw@" not in logged


def test_redaction_hides_credentials_wherever_they_appear() -> None:
    assert redact_url("http://user:pw@host:8/v1?api-key=abc&x=1") == (
        "http://***@host:8/v1?api-key=%2A%2A%2A&x=1"
    )
    text = redact(
        "GET https://u:p@h/v1 Authorization: Bearer tok.en sk-abcdef123 key=zz mysecret",
        ["mysecret"],
    )
    for secret in ("u:p@", "tok.en", "abcdef123", "zz", "mysecret"):
        assert secret not in text
    assert "https://***@h/v1" in text and "Bearer ***" in text


def test_a_cross_field_error_does_not_print_the_servers_config(upstream: ScriptedUpstream) -> None:
    guard = SMALL.model_copy(
        update={"n_samples": 4, "adaptive": True, "abstain_message": "OPERATOR-ONLY-TEXT"}
    )
    with proxy(upstream.base_url, guard=guard) as url:
        response = post(url, chat(uq_guard={"n_samples": 2}))
    error = assert_openai_error(response, 400)
    assert "adaptive_first_samples" in error["message"]
    assert "OPERATOR-ONLY-TEXT" not in response.text and "gaap_key_ratio" not in response.text
    assert upstream.bodies == []


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer sesame", 200),
        ("bearer sesame", 200),
        ("BEARER sesame", 200),
        ("sesame", 401),
        ("Basic sesame", 401),
        ("Bearer wrong", 401),
        ("", 401),
    ],
)
def test_the_bearer_scheme_is_case_insensitive_and_required(
    upstream: ScriptedUpstream, authorization: str, status: int
) -> None:
    with proxy(upstream.base_url, api_key="sesame") as url:
        response = post(url, chat(), authorization=authorization)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "invalid_api_key"


# -- bounded cost ------------------------------------------------------------------------


def test_a_queued_request_times_out_too() -> None:
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.5) as slow,
        proxy(slow.base_url, max_active_requests=1, max_queue=1, request_timeout_s=1.0) as url,
    ):
        first = threading.Thread(target=post, args=(url, chat(uq_guard={"n_samples": 8})))
        first.start()
        time.sleep(0.2)
        started = time.monotonic()
        queued = post(url, chat())
        waited = time.monotonic() - started
        first.join()
    assert assert_openai_error(queued, 504)["code"] == "timeout" and waited < 2.0


def test_a_full_queue_answers_503_with_retry_after() -> None:
    responses: list[httpx.Response] = []
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.5) as slow,
        proxy(slow.base_url, max_active_requests=1, max_queue=1) as url,
    ):
        threads = [
            threading.Thread(target=lambda: responses.append(post(url, chat()))) for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}
    busy = [r for r in responses if r.status_code == 503]
    assert busy and all(r.headers["retry-after"] == "1" for r in busy)
    assert busy[0].json()["error"]["code"] == "queue_full"


def test_a_burst_is_served_or_told_to_retry_and_health_stays_quick() -> None:
    async def burst(url: str) -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(timeout=60) as http:
            calls = [http.post(f"{url}/v1/chat/completions", json=chat()) for _ in range(40)]
            pending = asyncio.gather(*calls)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            assert (await http.get(f"{url}/health")).status_code == 200
            health_s = time.monotonic() - started
            return list(await pending), health_s

    with (
        ScriptedUpstream(honour_n=False, delay_s=0.2) as slow,
        proxy(slow.base_url, max_active_requests=4, max_queue=8) as url,
    ):
        responses, health_s = asyncio.run(burst(url))
    served = [r for r in responses if r.status_code == 200]
    busy = [r for r in responses if r.status_code == 503]
    assert len(served) + len(busy) == 40 and len(served) >= 12
    assert busy and all(r.headers.get("retry-after") == "1" for r in busy)
    assert health_s < 1.0


def calls_after(upstream: ScriptedUpstream, when: float) -> tuple[int, int]:
    """Upstream calls counted 1 s after ``when``, and 3 s after it."""
    time.sleep(max(0.0, when + 1.0 - time.monotonic()))
    soon = len(upstream.bodies)
    time.sleep(2.0)
    return soon, len(upstream.bodies)


# Sequential (concurrency 1), 0.4 s each: 1 reply + 8 samples take about 3.6 s uncancelled.
SLOW_POLICY = ServerPolicy(max_request_concurrency=1)
SLOW_SETTINGS = {"n_samples": 8}


def test_a_client_disconnect_stops_the_upstream_calls_within_a_second() -> None:
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.4) as slow,
        proxy(slow.base_url, policy=SLOW_POLICY) as url,
    ):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=chat(uq_guard=SLOW_SETTINGS), timeout=1.0)
        gone = time.monotonic()
        soon, later = calls_after(slow, gone)
        metrics = httpx.get(f"{url}/metrics").text
    assert soon == later < 9
    assert 'uq_guard_errors_total{type="client_disconnected"} 1.0' in metrics


def test_a_request_timeout_stops_the_upstream_calls_within_a_second() -> None:
    with (
        ScriptedUpstream(honour_n=False, delay_s=0.4) as slow,
        proxy(slow.base_url, policy=SLOW_POLICY, request_timeout_s=1.0) as url,
    ):
        response = post(url, chat(uq_guard=SLOW_SETTINGS))
        timed_out = time.monotonic()
        soon, later = calls_after(slow, timed_out)
    assert assert_openai_error(response, 504)["code"] == "timeout"
    assert soon == later < 9


def test_serve_refuses_a_policy_it_cannot_keep(capsys: pytest.CaptureFixture[str]) -> None:
    from uq_guard.cli import main

    upstream = ["serve", "--upstream", "http://127.0.0.1:9/v1"]
    assert main([*upstream, "--set", "n_samples=50"]) == 2
    assert "max_upstream_calls=64" in capsys.readouterr().err
    assert main([*upstream, "--allow-setting", "policy", "--allow-setting", "device"]) == 2
    assert "operator-only" in capsys.readouterr().err


def test_serve_options_make_the_policy() -> None:
    import argparse

    from uq_guard_server.serve import add_arguments, server_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default = server_settings(parser.parse_args([]))
    assert default.policy.allowed_settings == frozenset(DEFAULT_ALLOWED_SETTINGS)
    chosen = server_settings(
        parser.parse_args(
            ["--allow-setting", "none", "--max-upstream-calls", "60", "--max-queue", "3"]
        )
    )
    assert chosen.policy.allowed_settings == frozenset()
    assert (chosen.policy.max_upstream_calls, chosen.max_queue) == (60, 3)


def test_the_settings_repr_holds_no_key() -> None:
    shown = repr(ServerSettings(guard=SMALL, api_key="sesame-key", upstream_key=CANARY_KEY))
    assert "sesame-key" not in shown and CANARY_KEY not in shown


def test_the_log_filter_redacts_every_record() -> None:
    from uq_guard_server.redact import RedactingFilter

    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "POST %s key %s", ("http://u:pw@h/v1", CANARY_KEY), None
    )
    assert RedactingFilter([CANARY_KEY]).filter(record)
    assert record.getMessage() == "POST http://***@h/v1 key ***"
