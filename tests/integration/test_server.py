"""The ``uq_guard_server`` proxy on uvicorn (127.0.0.1), called with the real openai client.

The upstream is a scripted OpenAI-compatible server, so faults can be
injected: an upstream that is down, rate-limited or broken must give a clean
OpenAI-shaped error with the right status, never a hang or a crashed server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from uq_guard_server import DECISION_HEADER, OpenAIUpstream, ServerSettings, create_app

from tests.support.serve import free_port, serving
from tests.support.upstream import MODEL, Reply, ScriptedUpstream, is_sample
from uq_guard import GuardConfig

SMALL = GuardConfig(
    n_perturbations=0, perturbation="none", n_samples=2, max_tokens=24, retry_wait_s=0.05
)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def proxy(upstream_url: str, **settings: Any) -> Any:
    settings.setdefault("guard", SMALL)
    return serving(create_app(OpenAIUpstream(upstream_url), ServerSettings(**settings)))


@pytest.fixture
def proxy_url(upstream: ScriptedUpstream) -> Iterator[str]:
    with proxy(upstream.base_url) as url:
        yield url


def openai_client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def test_json_completion_with_report_and_decision_header(proxy_url: str) -> None:
    raw = openai_client(proxy_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION
    )
    resp = raw.parse()
    assert raw.headers[DECISION_HEADER] == "answer"
    assert resp.choices[0].message.content == "Paris is the capital of France."
    report = resp.model_extra["uncertainty"]
    assert report["decision"] == "answer" and report["n_samples"] == 2
    assert 0.0 <= report["confidence"] <= 1.0


def test_streaming_decides_first_and_reports_on_the_last_chunk(proxy_url: str) -> None:
    chunks = list(
        openai_client(proxy_url).chat.completions.create(
            model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital of France."
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["uncertainty"]["decision"] == "answer"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    with httpx.stream(
        "POST",
        f"{proxy_url}/v1/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_per_request_settings(upstream: ScriptedUpstream, proxy_url: str) -> None:
    resp = openai_client(proxy_url).chat.completions.create(
        model=MODEL, messages=QUESTION, extra_body={"uq_guard": {"n_samples": 3}}
    )
    assert resp.model_extra["uncertainty"]["n_samples"] == 3
    assert all("uq_guard" not in body for body in upstream.bodies)
    off = openai_client(proxy_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, extra_body={"uq_guard": {"enabled": False}}
    )
    assert off.headers[DECISION_HEADER] == "unguarded"
    assert "uncertainty" not in (off.parse().model_extra or {})


def test_models_health_and_metrics(proxy_url: str) -> None:
    client = openai_client(proxy_url)
    assert [m.id for m in client.models.list()] == [MODEL]
    client.chat.completions.create(model=MODEL, messages=QUESTION)
    assert httpx.get(f"{proxy_url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{proxy_url}/metrics").text
    assert 'uq_guard_decisions_total{decision="answer"} 1.0' in metrics
    assert "uq_guard_confidence_bucket" in metrics
    assert "uq_guard_upstream_calls_total 3.0" in metrics  # reply + 2 single samples
    assert 'uq_guard_requests_total{path="/v1/chat/completions",status="200"} 1.0' in metrics
    assert "uq_guard_request_latency_seconds_bucket" in metrics


# -- clean errors -------------------------------------------------------------------


def post(url: str, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": QUESTION}), 400, "model"),
        (json.dumps({"model": MODEL, "messages": []}), 400, "messages"),
        (json.dumps({"model": MODEL, "messages": ["hi"]}), 400, "messages"),
        (json.dumps({"model": MODEL, "messages": QUESTION, "n": 3}), 400, "n"),
        (
            json.dumps({"model": MODEL, "messages": QUESTION, "uq_guard": {"policy": "x"}}),
            400,
            "uq_guard",
        ),
        (json.dumps({"model": "no-such-model", "messages": QUESTION}), 404, "model"),
    ],
    ids=[
        "garbage",
        "not-object",
        "no-model",
        "no-messages",
        "bad-message",
        "n",
        "bad-setting",
        "unknown-model",
    ],
)
def test_bad_requests_get_openai_shaped_4xx(
    proxy_url: str, body: bytes | str, status: int, param: str | None
) -> None:
    response = post(proxy_url, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["param"] == param
    # and the server is still up
    assert httpx.get(f"{proxy_url}/health").status_code == 200


def test_an_oversized_request_gets_413(upstream: ScriptedUpstream) -> None:
    with proxy(upstream.base_url, max_body_bytes=2000) as url:
        big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]})
        response = post(url, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_openai_client_sees_its_own_exceptions(proxy_url: str) -> None:
    client = openai_client(proxy_url)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_an_upstream_that_is_down_gets_502() -> None:
    with proxy(f"http://127.0.0.1:{free_port()}/v1") as url:
        response = post(url, json.dumps({"model": MODEL, "messages": QUESTION}))
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "unreachable"
        assert httpx.get(f"{url}/v1/models").status_code == 502


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (
            Reply(429, {"error": {"message": "slow"}}, headers={"retry-after": "7"}),
            429,
            "rate_limited",
        ),
        (Reply(500, {"error": {"message": "boom"}}), 502, "upstream_500"),
        (Reply(body=b"<html>oops"), 502, "bad_response"),
        (Reply(hang_s=5.0), 504, "timeout"),
    ],
    ids=["429", "500", "garbage", "timeout"],
)
def test_a_failed_reply_gets_a_clean_error(
    upstream: ScriptedUpstream, fault: Reply, status: int, code: str
) -> None:
    upstream.script = lambda body, index: None if is_sample(body) else fault
    guard = SMALL.model_copy(update={"max_retries": 0, "timeout_s": 1.0})
    with proxy(upstream.base_url, guard=guard) as url:
        response = post(url, json.dumps({"model": MODEL, "messages": QUESTION}))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if status == 429:
        assert response.headers["retry-after"] == "7"


def test_failed_samples_degrade_but_the_reply_comes_back(upstream: ScriptedUpstream) -> None:
    upstream.script = lambda body, index: (
        Reply(500, {"error": {"message": "x"}}) if is_sample(body) else None
    )
    with proxy(upstream.base_url) as url:
        resp = openai_client(url).chat.completions.create(model=MODEL, messages=QUESTION)
        metrics = httpx.get(f"{url}/metrics").text
    assert resp.choices[0].message.content == "Paris is the capital of France."
    report = resp.model_extra["uncertainty"]
    assert report["degraded"] is True
    assert report["confidence"] is None and report["decision"] == "answer"
    # no estimate is left out of the confidence histogram, not counted as 0
    assert "uq_guard_confidence_count 0.0" in metrics
    assert "uq_guard_degraded_total 1.0" in metrics


def test_the_client_key_is_checked_when_configured(upstream: ScriptedUpstream) -> None:
    with proxy(upstream.base_url, api_key="sesame") as url:
        with pytest.raises(openai.AuthenticationError):
            openai_client(url, key="wrong").chat.completions.create(model=MODEL, messages=QUESTION)
        resp = openai_client(url, key="sesame").chat.completions.create(
            model=MODEL, messages=QUESTION
        )
        assert resp.model_extra["uncertainty"]["decision"] == "answer"
        assert httpx.get(f"{url}/health").status_code == 200  # health stays open
