"""``wrap_openai`` with the real openai client against a scripted upstream on 127.0.0.1.

Fault injection: 429 with Retry-After, 500, a timeout, a truncated body,
garbage JSON, a choice with no content. The guarded call retries what is
retryable, degrades the report when samples fail, returns the reply whenever
the reply itself succeeded, and raises the SDK's own error when it did not.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from uq_guard_openai import wrap_openai

import uq_guard
from tests.support.upstream import Reply, ScriptedUpstream, completion, is_sample
from uq_guard import GenerationError, UncertaintyAbstention, UncertaintyReport
from uq_guard.perturb import PerturbationResult

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SMALL = {
    "n_perturbations": 0,
    "perturbation": "none",
    "n_samples": 3,
    "max_tokens": 24,
    "retry_wait_s": 0.05,
    "max_retries": 2,
}


class TwoVariants:
    """A model-free perturber: two fixed rewordings."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        variants = [f"Please answer: {prompt}", f"Quick question. {prompt}"][:m]
        return PerturbationResult(prompts=variants, method="two_variants", n_requested=m)


def client(upstream: ScriptedUpstream, **config: Any) -> openai.OpenAI:
    raw = openai.OpenAI(base_url=upstream.base_url, api_key="test", max_retries=0)
    return wrap_openai(raw, **{**SMALL, **config})


def ask(guarded: Any, **kwargs: Any) -> Any:
    return guarded.chat.completions.create(model="scripted-model", messages=QUESTION, **kwargs)


def samples_fail(reply: Reply, *, times: int | None = None) -> Any:
    """A script failing sample requests with ``reply`` (the first ``times`` of them)."""
    seen = {"n": 0}

    def script(body: dict[str, Any], index: int) -> Reply | None:
        if not is_sample(body):
            return None
        seen["n"] += 1
        return reply if times is None or seen["n"] <= times else None

    return script


def reply_fails(reply: Reply) -> Any:
    return lambda body, index: None if is_sample(body) else reply


# -- the happy path ---------------------------------------------------------------


def test_guarded_reply_is_a_chat_completion_with_a_report() -> None:
    with ScriptedUpstream() as upstream:
        guarded = client(upstream)
        assert isinstance(guarded, openai.OpenAI)
        resp = ask(guarded)
    assert isinstance(resp, ChatCompletion)
    assert resp.choices[0].message.content == "Paris is the capital of France."
    assert len(resp.choices) == 1
    assert isinstance(resp.uncertainty, UncertaintyReport)
    assert resp.model_extra["uncertainty"] is resp.uncertainty
    assert resp.uncertainty.n_samples == 3 and not resp.uncertainty.degraded
    assert resp.usage.prompt_tokens == 20  # reply + one n=3 sample call, summed
    assert '"uncertainty"' in resp.to_json()
    # the reply asked for logprobs for white-box scores, but the user did not
    assert resp.choices[0].logprobs is None
    assert "g_nll" in resp.uncertainty.scores or any("nll" in k for k in resp.uncertainty.scores)


def test_with_options_and_guard_keep_the_guard() -> None:
    with ScriptedUpstream() as upstream:
        raw = openai.OpenAI(base_url=upstream.base_url, api_key="test", max_retries=0)
        guarded = uq_guard.guard(raw, **SMALL)
        assert isinstance(guarded, openai.OpenAI)
        resp = ask(guarded.with_options(timeout=30))
        assert isinstance(resp.uncertainty, UncertaintyReport)
        # the user's own client is untouched
        assert "uncertainty" not in (ask(raw).model_extra or {})


def test_a_server_that_ignores_n_gets_single_requests() -> None:
    with ScriptedUpstream(honour_n=False) as upstream:
        guarded = client(upstream, n_perturbations=2, perturber=None)
        guarded = wrap_openai(
            openai.OpenAI(base_url=upstream.base_url, api_key="t", max_retries=0),
            perturber=TwoVariants(),
            **{**SMALL, "n_perturbations": 2, "perturbation": "paraphrase"},
        )
        first = ask(guarded)
        asked_n_first = [b.get("n") for b in upstream.sample_bodies()]
        upstream.bodies.clear()
        second = ask(guarded)
    assert first.uncertainty.n_samples == 9 and first.uncertainty.n_prompts == 3
    assert first.uncertainty.method == "inv_entropy"
    assert 3 in asked_n_first  # asked with n first...
    # ...then learnt: the next call sends one request per answer
    assert [b.get("n") for b in upstream.sample_bodies()] == [None] * 9
    assert second.uncertainty.n_samples == 9 and not second.uncertainty.degraded


async def test_async_client() -> None:
    with ScriptedUpstream() as upstream:
        raw = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="t", max_retries=0)
        guarded = wrap_openai(raw, **SMALL)
        assert isinstance(guarded, openai.AsyncOpenAI)
        resp = await guarded.chat.completions.create(model="scripted-model", messages=QUESTION)
    assert isinstance(resp, ChatCompletion)
    assert resp.uncertainty.n_samples == 3


# -- pass-through and per-call settings -------------------------------------------


def test_what_cannot_be_guarded_passes_through() -> None:
    with ScriptedUpstream() as upstream:
        guarded = client(upstream)
        raw_response = guarded.chat.completions.with_raw_response.create(
            model="scripted-model", messages=QUESTION
        )
        assert raw_response.http_response.status_code == 200
        two = ask(guarded, n=2)
        off = ask(guarded, extra_body={"uq_guard": {"enabled": False}})
        assert len(upstream.bodies) == 3  # one upstream call each, no samples
        assert all("uq_guard" not in body for body in upstream.bodies)
    assert len(two.choices) == 2 and "uncertainty" not in (two.model_extra or {})
    assert "uncertainty" not in (off.model_extra or {})


def erratic() -> Any:
    """Sample answers that have nothing in common; the reply stays about Paris."""
    topics = iter(["Bananas are yellow.", "The sea is salty.", "Mozart wrote operas."] * 50)
    return lambda body: next(topics) if is_sample(body) else "Paris is the capital of France."


def test_per_call_settings_travel_in_extra_body() -> None:
    with ScriptedUpstream(erratic(), honour_n=False) as upstream:
        resp = ask(
            client(upstream), extra_body={"uq_guard": {"policy": "abstain", "threshold": 0.9}}
        )
        assert all("uq_guard" not in body for body in upstream.bodies)
    assert resp.uncertainty.decision == "abstain"
    assert resp.choices[0].message.content == resp.uncertainty.reply
    assert resp.uncertainty.original_reply == "Paris is the capital of France."
    with ScriptedUpstream() as upstream, pytest.raises(uq_guard.ConfigurationError):
        ask(client(upstream), extra_body={"uq_guard": {"policy": "shrug"}})


def test_policy_raise_carries_the_withheld_completion() -> None:
    with (
        ScriptedUpstream(erratic(), honour_n=False) as upstream,
        pytest.raises(UncertaintyAbstention) as caught,
    ):
        ask(client(upstream, policy="raise", threshold=0.9))
    assert isinstance(caught.value.reply, ChatCompletion)
    assert caught.value.reply.uncertainty is caught.value.report


# -- faults in the samples: retried or degraded, the reply stands ---------------------


def test_429_with_retry_after_is_retried_after_the_wait() -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, headers={"retry-after": "0.6"})
    with ScriptedUpstream(script=samples_fail(limited, times=1)) as upstream:
        started = time.perf_counter()
        resp = ask(client(upstream))
        elapsed = time.perf_counter() - started
        assert len(upstream.sample_bodies()) == 2  # the 429, then the retry
    assert not resp.uncertainty.degraded and resp.uncertainty.n_samples == 3
    assert elapsed >= 0.6


@pytest.mark.parametrize(
    ("fault", "sample_calls"),
    [
        # retryable: the first try and max_retries=2 more
        (Reply(500, {"error": {"message": "boom"}}), 3),
        (Reply(truncate=True, body=completion(["cut short"] * 3)), 3),
        # not retryable: one try
        (Reply(body=b"{not json at all"), 1),
        (
            Reply(
                body={
                    **completion(["x"]),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant"}, "finish_reason": "stop"}
                    ],
                }
            ),
            3,  # an empty choice for n=3 looks like n ignored: two singles follow
        ),
    ],
    ids=["500", "truncated", "garbage-json", "no-content"],
)
def test_failing_samples_degrade_the_report_and_keep_the_reply(
    fault: Reply, sample_calls: int
) -> None:
    with ScriptedUpstream(script=samples_fail(fault)) as upstream:
        resp = ask(client(upstream))
        assert len(upstream.sample_bodies()) == sample_calls
    assert resp.choices[0].message.content == "Paris is the capital of France."
    report = resp.uncertainty
    assert report.degraded and report.n_failed == 3 and report.n_samples == 0
    assert report.degraded_reasons
    assert report.confidence is None and report.uncertainty is None
    assert report.decision == "answer"


def test_a_sample_that_times_out_degrades_the_report() -> None:
    with ScriptedUpstream(script=samples_fail(Reply(hang_s=5.0))) as upstream:
        started = time.perf_counter()
        resp = ask(client(upstream, timeout_s=0.5, max_retries=1))
    assert time.perf_counter() - started < 4.0
    assert resp.uncertainty.degraded and resp.uncertainty.n_failed == 3
    assert resp.choices[0].message.content == "Paris is the capital of France."


# -- faults in the reply: the SDK's own error, or a clean GenerationError -------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Reply(500, {"error": {"message": "boom"}}), openai.InternalServerError),
        (
            Reply(429, {"error": {"message": "slow"}}, headers={"retry-after": "0"}),
            openai.RateLimitError,
        ),
        (Reply(400, {"error": {"message": "bad model"}}), openai.BadRequestError),
        (Reply(truncate=True, body=completion(["cut"])), openai.APIConnectionError),
    ],
    ids=["500", "429", "400", "truncated"],
)
def test_a_failed_reply_raises_what_the_sdk_raises(fault: Reply, error: type) -> None:
    with ScriptedUpstream(script=reply_fails(fault)) as upstream, pytest.raises(error):
        ask(client(upstream))


def test_a_reply_with_no_content_is_a_clean_error() -> None:
    empty = {**completion(["x"]), "choices": []}
    with (
        ScriptedUpstream(script=reply_fails(Reply(body=empty))) as upstream,
        pytest.raises(GenerationError, match="no choices"),
    ):
        ask(client(upstream))


def test_sdk_retries_are_off_for_samples_but_kept_for_the_reply() -> None:
    failing = Reply(500, {"error": {"message": "boom"}})
    with ScriptedUpstream(script=samples_fail(failing)) as upstream:
        raw = openai.OpenAI(base_url=upstream.base_url, api_key="t", max_retries=2)
        resp = ask(wrap_openai(raw, **{**SMALL, "max_retries": 0}))
        assert len(upstream.sample_bodies()) == 1  # no SDK retry behind the engine's back
    assert resp.uncertainty.degraded
    with ScriptedUpstream(script=reply_fails(failing)) as upstream:
        raw = openai.OpenAI(base_url=upstream.base_url, api_key="t", max_retries=1)
        with pytest.raises(openai.InternalServerError):
            ask(wrap_openai(raw, **SMALL))
        replies = [b for b in upstream.bodies if not is_sample(b)]
        assert len(replies) == 2  # the user's SDK retry, and no more
