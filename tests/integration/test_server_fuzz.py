"""The proxy fuzzed from its own OpenAPI schema with schemathesis (issue 11).

The real proxy on uvicorn at 127.0.0.1, in front of a scripted upstream that
fails one call in nine (a 500 quoting the upstream key, or garbage).
schemathesis loads ``/openapi.json`` and generates requests that fit the
documented chat body and requests that break it. Every response must be
clean (:func:`tests.support.fuzz.problems`): no status of 500 or more except a
502/504 that an upstream fault explains, no traceback, no credential, every
refusal before any upstream call, every error in OpenAI's shape.
``benchmarks/reliability.py`` runs the same generator for 1,000+ requests.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from uq_guard_server import OpenAIUpstream, ServerSettings, create_app

from tests.integration.test_server import SMALL
from tests.integration.test_server_safety import assert_openai_error, chat, post
from tests.support.fuzz import (
    CHAT_PATH,
    CLIENT_KEY,
    GUARD,
    UPSTREAM_KEY,
    FaultyUpstream,
    Observed,
    call,
    case_strategy,
    problems,
)
from tests.support.serve import serving
from tests.support.upstream import Reply, ScriptedUpstream, is_sample

EXAMPLES_PER_MODE = 120


@pytest.mark.slow
def test_fuzzing_from_the_openapi_schema_finds_no_server_error() -> None:
    target = FaultyUpstream()
    seen: list[Observed] = []
    settings_ = ServerSettings(guard=GUARD, api_key=CLIENT_KEY, upstream_key=UPSTREAM_KEY)
    with target.upstream as upstream:
        app = create_app(OpenAIUpstream(upstream.base_url, api_key=UPSTREAM_KEY), settings_)
        with serving(app) as url:
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            for mode in schemathesis.GenerationMode:

                @settings(
                    max_examples=EXAMPLES_PER_MODE,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=case_strategy(schema, mode))
                def fuzz(case: Any) -> None:
                    observed = call(case, url, target)
                    seen.append(observed)
                    found = problems(observed)
                    assert not found, (case.method, case.path, case.body, found)

                fuzz()

    chat = Counter(o.status for o in seen if o.path == CHAT_PATH)
    # the generator reached every layer: refusals, served requests, upstream faults
    assert chat[400] and chat[404] and chat[200], chat
    assert target.calls > 0 and target.faults > 0


# -- what the fuzzer found, each pinned down ---------------------------------------------


def _proxy(upstream: ScriptedUpstream) -> Any:
    return serving(create_app(OpenAIUpstream(upstream.base_url), ServerSettings(guard=SMALL)))


@pytest.mark.parametrize(
    "content",
    [[{"type": "text", "text": 4.8e16}], [{"text": None}], ["a bare string part"]],
    ids=["number-text", "null-text", "string-part"],
)
def test_a_content_part_without_text_gets_400_before_any_upstream_call(
    upstream: ScriptedUpstream, content: list[Any]
) -> None:
    # was a 500: the guard joined the parts' "text" values as strings
    with _proxy(upstream) as url:
        response = post(url, chat(messages=[{"role": "user", "content": content}]))
    assert assert_openai_error(response, 400)["param"] == "messages"
    assert upstream.bodies == []


def test_an_unguarded_request_over_an_upstream_answering_garbage_gets_502(
    upstream: ScriptedUpstream,
) -> None:
    # was a 500: the SDK raised the JSON decoder's error, which no branch took for the upstream's
    upstream.script = lambda body, index: Reply(body=b"<html>not json")
    with _proxy(upstream) as url:
        response = post(url, chat(uq_guard={"enabled": False}))
    assert assert_openai_error(response, 502)["code"] == "bad_response"


def test_a_guarded_request_with_no_user_message_gets_400_naming_messages(
    upstream: ScriptedUpstream,
) -> None:
    # was a 400 that blamed the uq_guard settings
    with _proxy(upstream) as url:
        guarded = post(url, chat(messages=[{"role": "system", "content": "Be brief."}]))
        unguarded = post(
            url,
            chat(messages=[{"role": "system", "content": "Hi"}], uq_guard={"enabled": False}),
        )
    error = assert_openai_error(guarded, 400)
    assert error["param"] == "messages" and "no user message" in error["message"]
    assert unguarded.status_code == 200  # without the guard there is no prompt to need
    assert len(upstream.bodies) == 1


def test_a_degraded_report_names_the_upstream_status_but_not_its_text(
    upstream: ScriptedUpstream,
) -> None:
    # was the upstream's error text, verbatim but for credentials, in degraded_reasons
    internal = "denied at http://10.0.0.7/v1 for tenant-42"
    upstream.script = lambda body, index: (
        Reply(500, {"error": {"message": internal}}) if is_sample(body) else None
    )
    with _proxy(upstream) as url:
        response = post(url, chat())
    assert response.status_code == 200
    reasons = response.json()["uncertainty"]["degraded_reasons"]
    assert any("the upstream answered 500" in r for r in reasons), reasons
    assert "tenant-42" not in response.text and "10.0.0.7" not in response.text


def test_the_openapi_schema_describes_the_chat_body() -> None:
    from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS

    schema = create_app(OpenAIUpstream("http://127.0.0.1:9/v1")).openapi()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    fields = body["content"]["application/json"]["schema"]["properties"]
    assert {"model", "messages", "stream", "max_tokens", "uq_guard"} <= set(fields)
    assert set(fields["uq_guard"]["properties"]) == set(DEFAULT_ALLOWED_SETTINGS)
    assert fields["uq_guard"]["additionalProperties"] is False
