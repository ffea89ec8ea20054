"""The real openai client against real servers: llama.cpp with SmolLM2, and the proxy over it.

``wrap_openai`` against ``llama_cpp.server`` (which ignores ``n``), then
``uq-guard serve``'s app on uvicorn in front of that server and, separately,
in front of the local Hugging Face SmolLM2: JSON, streaming, ``/v1/models``,
``/health``, ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from uq_guard_hf import HuggingFaceChatModel
from uq_guard_openai import wrap_openai
from uq_guard_server import (
    DECISION_HEADER,
    LocalUpstream,
    OpenAIUpstream,
    ServerSettings,
    create_app,
)

from tests.support.serve import serving
from uq_guard import GuardConfig, UncertaintyReport

pytestmark = pytest.mark.slow

SMALL = {"n_perturbations": 0, "perturbation": "none", "n_samples": 2, "max_tokens": 24}
JAPAN = [{"role": "user", "content": "What is the capital of Japan?"}]


def test_wrap_openai_against_llama_cpp(llama_server: str) -> None:
    raw = openai.OpenAI(base_url=llama_server, api_key="none")
    guarded = wrap_openai(raw, **SMALL)
    resp = guarded.chat.completions.create(
        model="smollm2", messages=JAPAN, max_tokens=24, temperature=0
    )
    report = resp.uncertainty
    assert isinstance(report, UncertaintyReport)
    assert "Tokyo" in resp.choices[0].message.content
    # llama.cpp ignores n: the guard noticed and sent single requests instead
    assert report.n_samples == 2 and report.n_failed == 0 and not report.degraded
    assert report.cost.model_calls == 3 or report.cost.model_calls == 4
    assert guarded._uq_guard.capabilities.n is False
    # white-box scores from the reply's log-probabilities, which the user does not see
    assert resp.choices[0].logprobs is None
    assert guarded._uq_guard.capabilities.logprobs is True
    again = guarded.chat.completions.create(
        model="smollm2", messages=JAPAN, max_tokens=24, temperature=0
    )
    assert again.uncertainty.cost.model_calls == 3  # known now: no n=2 attempt first


async def test_async_wrap_openai_against_llama_cpp(llama_server: str) -> None:
    guarded = wrap_openai(openai.AsyncOpenAI(base_url=llama_server, api_key="none"), **SMALL)
    resp = await guarded.chat.completions.create(
        model="smollm2", messages=JAPAN, max_tokens=24, temperature=0
    )
    assert resp.model_extra["uncertainty"].n_samples == 2


def check_the_proxy(url: str, model: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
    assert model in [m.id for m in client.models.list()]

    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=JAPAN, max_tokens=24, temperature=0
    )
    resp = raw.parse()
    report: dict[str, Any] = resp.model_extra["uncertainty"]
    assert raw.headers[DECISION_HEADER] == report["decision"] == "answer"
    assert "Tokyo" in resp.choices[0].message.content
    assert report["n_samples"] == 2 and 0.0 <= report["confidence"] <= 1.0

    chunks = list(
        client.chat.completions.create(
            model=model, messages=JAPAN, max_tokens=24, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Tokyo" in streamed
    assert chunks[-1].model_extra["uncertainty"]["n_samples"] == 2

    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'uq_guard_decisions_total{decision="answer"} 2.0' in metrics
    assert "uq_guard_confidence_count 2.0" in metrics


@pytest.fixture
def proxy_over_llama(llama_server: str) -> Iterator[str]:
    app = create_app(OpenAIUpstream(llama_server), ServerSettings(guard=GuardConfig(**SMALL)))
    with serving(app) as url:
        yield url


def test_the_proxy_over_llama_cpp(proxy_over_llama: str) -> None:
    check_the_proxy(proxy_over_llama, "smollm2")


def test_the_proxy_over_the_local_model(smollm2: HuggingFaceChatModel) -> None:
    upstream = LocalUpstream(smollm2, "smollm2-135m-instruct")
    app = create_app(upstream, ServerSettings(guard=GuardConfig(**SMALL)))
    with serving(app) as url:
        check_the_proxy(url, "smollm2-135m-instruct")
