"""Fuzzing the proxy from its OpenAPI schema (the fuzz test and ``benchmarks/reliability.py``).

schemathesis reads ``/openapi.json`` (where the chat route documents its
body: :func:`uq_guard_server.app.chat_request_schema`) and generates requests
that fit it (positive) or break it (negative). Three of the generated chat
bodies in four get the served model's name, so that they get past the model check
and reach the guard and the upstream.

The upstream (:class:`FaultyUpstream`) fails now and then, on a fixed
pattern: a 500 whose text quotes a credential, or a body that is not JSON.
:func:`problems` then names what a response did wrong: a status of 500 or
more other than a 502/504 that an upstream fault explains, a traceback in
the body, a credential in the body or the headers, a refusal (400, 401,
404, 413) that came after an upstream call, an error not in OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.upstream import MODEL, Reply, ScriptedUpstream
from uq_guard import GuardConfig

CHAT_PATH = "/v1/chat/completions"
UPSTREAM_KEY = "sk-canaryUPSTREAM0123456789"
"""The upstream's key in the fuzzed setup: it must never reach a client."""
CLIENT_KEY = "canary-client-key-0123456789"
"""The client key the fuzzed proxy checks (the fuzzer sends it)."""
FAULT_EVERY = 9
"""One upstream chat call in this many fails (a 500 or, every other time, garbage)."""
GUARD = GuardConfig(
    n_perturbations=2,
    perturbation="gaap",
    n_samples=2,
    max_tokens=24,
    retry_wait_s=0.01,
    max_retries=1,
)
"""The fuzzed proxy's guard: GAAP on, so generated prompts go through the perturber; small."""
_REFUSALS = (400, 401, 404, 413)  # the proxy's own refusals: never after an upstream call


@dataclass
class FaultyUpstream:
    """A :class:`ScriptedUpstream` answering one chat call in :data:`FAULT_EVERY` with a fault.

    The 500's text quotes :data:`UPSTREAM_KEY`, as a careless upstream
    echoing its request's headers would. ``faults`` counts the faults so far.
    """

    faults: int = 0
    upstream: ScriptedUpstream = field(init=False)

    def __post_init__(self) -> None:
        self.upstream = ScriptedUpstream(_varied_answer, honour_n=False, script=self._script)

    def _script(self, body: dict[str, Any], index: int) -> Reply | None:
        if index % FAULT_EVERY != FAULT_EVERY - 1:
            return None
        self.faults += 1
        if (index // FAULT_EVERY) % 2:
            return Reply(body=b"<html>upstream garbage")
        leak = f"internal error; request had Authorization: Bearer {UPSTREAM_KEY}"
        return Reply(500, {"error": {"message": leak}})

    @property
    def calls(self) -> int:
        return len(self.upstream.bodies)


def _varied_answer(body: dict[str, Any]) -> str:
    return ["Paris.", "It is Paris.", "Lyon, I think."][len(json.dumps(body)) % 3]


def case_strategy(schema: Any, mode: Any) -> Any:
    """Cases of every operation in ``schema``; three chat bodies in four name the served model."""
    from hypothesis import strategies as st

    known = st.integers(0, 3).map(lambda i: i != 3)  # hypothesis favours 0: make it True
    return st.tuples(schema.as_strategy(generation_mode=mode), known).map(_served_model)


def _served_model(pair: tuple[Any, bool]) -> Any:
    case, known = pair
    if known and case.path == CHAT_PATH and isinstance(case.body, dict):
        case.body = {**case.body, "model": MODEL}
    return case


@dataclass
class Observed:
    """One response, and what the upstream saw while it was made."""

    status: int
    text: str
    headers: dict[str, str]
    path: str
    upstream_calls: int
    upstream_faults: int


def problems(seen: Observed, secrets: Iterable[str] = (UPSTREAM_KEY, CLIENT_KEY)) -> list[str]:
    """What this response did wrong (empty: nothing)."""
    found = []
    if seen.status >= 500 and not (seen.status in (502, 504) and seen.upstream_faults):
        found.append(f"status {seen.status} without an upstream fault")
    if "Traceback" in seen.text or 'File "' in seen.text:
        found.append("a traceback in the body")
    shown = seen.text + json.dumps(seen.headers)
    found.extend(f"the credential {s[:8]}... shown" for s in secrets if s in shown)
    if seen.path == CHAT_PATH and seen.status in _REFUSALS and seen.upstream_calls:
        found.append(f"{seen.status} after {seen.upstream_calls} upstream calls")
    if seen.status >= 400 and seen.status != 499:
        try:
            error = json.loads(seen.text)["error"]
            assert {"message", "type", "param", "code"} <= set(error) and error["message"]
        except (ValueError, KeyError, TypeError, AssertionError):
            found.append(f"a {seen.status} not in OpenAI's error shape: {seen.text[:120]!r}")
    return found


def call(case: Any, base_url: str, target: FaultyUpstream) -> Observed:
    """Send ``case`` to the proxy with the client key; what came back, upstream counts included."""
    calls, faults = target.calls, target.faults
    response = case.call(
        base_url=base_url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=60
    )
    return Observed(
        status=response.status_code,
        text=response.text,
        headers=dict(response.headers),
        path=case.path,
        upstream_calls=target.calls - calls,
        upstream_faults=target.faults - faults,
    )


# -- the hand-written cases of issue 11 ------------------------------------------------


@dataclass(frozen=True)
class HandCase:
    """One hand-written request and the status the proxy must answer."""

    name: str
    body: bytes
    expected: int
    authorization: str | None = f"Bearer {CLIENT_KEY}"

    @property
    def headers(self) -> dict[str, str]:
        key = {} if self.authorization is None else {"authorization": self.authorization}
        return {"content-type": "application/json", **key}


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": QUESTION, **fields}).encode()


def _raw(tail: str, messages: str = json.dumps(QUESTION)) -> bytes:
    return f'{{"model": "{MODEL}", "messages": {messages}{tail}}}'.encode()


def _settings(**settings: Any) -> bytes:
    return _chat(uq_guard=settings)


def _prompt(text: str) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]}).encode()


HAND_WRITTEN: tuple[HandCase, ...] = (
    HandCase("'[' nested 100,000 times", b"[" * 100_000, 400),
    HandCase("nested 40 levels", _raw(', "metadata": ' + "[" * 40 + "]" * 40), 400),
    HandCase(
        "lone surrogate in content", _raw("", '[{"role": "user", "content": "\\ud800"}]'), 400
    ),
    HandCase('"temperature": NaN', _raw(', "temperature": NaN'), 400),
    HandCase('"stream": true, "stream_options": "x"', _chat(stream=True, stream_options="x"), 400),
    HandCase("stream_options without stream", _chat(stream_options={"include_usage": True}), 400),
    HandCase('"timeout": "x"', _chat(timeout="x"), 400),
    HandCase('"extra_headers": 5', _chat(extra_headers=5), 400),
    HandCase('"extra_query": 5', _chat(extra_query=5), 400),
    HandCase(
        "extra_headers replacing the upstream key",
        _chat(extra_headers={"Authorization": "Bearer sk-attacker"}),
        400,
    ),
    HandCase('"extra_query": {"a": 1}', _chat(extra_query={"a": 1}), 400),
    HandCase('"extra_body": {...}', _chat(extra_body={"x": 1}), 400),
    HandCase('device "cpu:1"', _settings(device="cpu:1"), 400),
    HandCase('device "cuda:99"', _settings(device="cuda:99"), 400),
    HandCase('device "toaster"', _settings(device="toaster"), 400),
    HandCase('device "CPU"', _settings(device="CPU"), 400),
    HandCase('embedding_model "/etc"', _settings(embedding_model="/etc"), 400),
    HandCase("embedding_model unknown", _settings(embedding_model="no-such/model"), 400),
    HandCase('calibration "/etc/passwd"', _settings(calibration="/etc/passwd"), 400),
    HandCase("calibration a directory", _settings(calibration="/tmp"), 400),
    HandCase(
        "the 9,941-call body",
        _settings(n_perturbations=100, n_samples=100, max_concurrency=1024),
        400,
    ),
    HandCase(
        "n_perturbations=100, n_samples=100", _settings(n_perturbations=100, n_samples=100), 400
    ),
    HandCase("max_tokens=10**9", _chat(max_tokens=10**9), 400),
    HandCase("uq_guard.max_tokens=10**9", _settings(max_tokens=10**9), 400),
    HandCase('"enabled": "false"', _settings(enabled="false"), 400),
    HandCase('"n_samples": "3"', _settings(n_samples="3"), 400),
    HandCase('"n": 3', _chat(n=3), 400),
    HandCase("no user message", _chat(messages=[{"role": "system", "content": "hi"}]), 400),
    HandCase("not JSON", b"{not json", 400),
    HandCase("over 1 MB", _prompt("x" * 1_100_000), 413),
    HandCase("750 KB prompt (perturbation skipped)", _prompt("Paris? " * 107_000), 200),
    HandCase("450-word prompt (perturbation skipped)", _prompt("What is the capital? " * 113), 200),
    HandCase("a raw key without Bearer", _chat(), 401, CLIENT_KEY),
    HandCase("lower-case bearer", _chat(), 200, f"bearer {CLIENT_KEY}"),
    HandCase("no key", _chat(), 401, None),
    HandCase("unknown model", _chat(model="no-such-model"), 404),
    HandCase("a well-formed request", _chat(), 200),
)
"""Each malformed request of issue 11 (and a few well-formed ones), with the status it must get.

Sent with the client key (``Authorization: Bearer CLIENT_KEY``) unless ``authorization`` says.
"""
