"""``max_tokens`` caps the samples only: the reply is never cut at the sample cap.

Checked at the engine (what it asks its backend), and in every wrapper: the
LangChain model, ``wrap_openai`` and the proxy (an OpenAI-compatible upstream
and a local model). Under ``policy="best_of"`` a sample may become the answer,
so the original prompt's samples go at the reply's length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import openai
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict
from uq_guard_langchain import GuardedChatModel
from uq_guard_openai import wrap_openai
from uq_guard_openai.stream import _http_module
from uq_guard_server.policy import completion_tokens
from uq_guard_server.upstream import LocalUpstream, OpenAIUpstream

from tests.support.upstream import completion
from tests.unit.fake_backend import ANSWER, QUESTION, FakeBackend, kind_of, prompt_of
from tests.unit.lc_fakes import ScriptedChatModel, steady
from tests.unit.model_free_parts import FixedVariants, HashingEmbedder
from uq_guard import Guard, GuardConfig
from uq_guard.backend import Generation, GenerationRequest, Usage

HTTP = _http_module(openai.OpenAI(api_key="unused"))
SAMPLE_CAP = 16
REPLY_CAP = 500
SMALL = {"n_perturbations": 2, "n_samples": 2, "max_tokens": SAMPLE_CAP}
MESSAGES = [{"role": "user", "content": QUESTION}]


PARTS = {"embedder": HashingEmbedder(), "perturber": FixedVariants()}


# -- the engine -------------------------------------------------------------------------


async def test_the_reply_request_has_no_cap_and_every_sample_has_the_sample_cap() -> None:
    backend = FakeBackend()
    await Guard(backend, **PARTS, **SMALL).arun(QUESTION)

    (reply,) = backend.requests_of("reply")
    samples = backend.requests_of("sample")
    assert reply.max_tokens is None  # the model's (or the caller's) own cap
    assert len(samples) == 3 and {s.max_tokens for s in samples} == {SAMPLE_CAP}


async def test_best_of_samples_the_original_prompt_at_the_replys_length() -> None:
    backend = FakeBackend()
    await Guard(backend, **PARTS, **SMALL, policy="best_of").arun(QUESTION)

    caps = {prompt_of(r): r.max_tokens for r in backend.requests_of("sample")}
    assert caps.pop(QUESTION) is None  # a candidate for the answer: never cut short
    assert set(caps.values()) == {SAMPLE_CAP}  # the perturbed prompts stay short


async def test_adaptive_best_of_keeps_the_original_prompts_samples_uncut_in_both_rounds() -> None:
    backend = FakeBackend(lambda prompt, i: f"answer {i}")  # never agrees: two rounds
    config = {**SMALL, "n_samples": 3, "adaptive": True, "policy": "best_of"}
    report = (await Guard(backend, **PARTS, **config).arun(QUESTION)).report

    assert report.sampling_rounds == 2
    x0 = [r for r in backend.requests_of("sample") if prompt_of(r) == QUESTION]
    assert len(x0) == 2 and all(r.max_tokens is None for r in x0)


# -- wrap_openai and the proxy's OpenAI-compatible upstream ----------------------------


class CapServer:
    """Records each request's token caps; answers like a server that honours ``n``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        n = body.get("n") or 1
        return HTTP.Response(
            200, json=completion([ANSWER] * n, logprobs=bool(body.get("logprobs")))
        )

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="test",
            base_url="http://fake.test/v1",
            max_retries=0,
            http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(self.handle)),
        )

    def caps(self, name: str) -> tuple[Any, set[Any]]:
        """The reply's value of ``name`` and the samples' values."""
        replies = [b for b in self.bodies if b.get("temperature") is None]
        samples = [b for b in self.bodies if b.get("temperature") is not None]
        assert len(replies) == 1 and samples
        return replies[0].get(name), {b.get(name) for b in samples}


async def test_wrap_openai_sends_the_callers_cap_with_the_reply_and_the_guards_with_samples() -> (
    None
):
    server = CapServer()
    client = wrap_openai(server.client(), **PARTS, **SMALL)

    await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=REPLY_CAP)

    assert server.caps("max_tokens") == (REPLY_CAP, {SAMPLE_CAP})


async def test_wrap_openai_caps_samples_under_the_name_the_caller_used() -> None:
    server = CapServer()
    client = wrap_openai(server.client(), **PARTS, **SMALL)

    await client.chat.completions.create(
        model="m", messages=MESSAGES, max_completion_tokens=REPLY_CAP
    )

    assert server.caps("max_completion_tokens") == (REPLY_CAP, {SAMPLE_CAP})
    assert server.caps("max_tokens") == (None, {None})


async def test_wrap_openai_reply_without_a_cap_stays_without_one() -> None:
    server = CapServer()
    await wrap_openai(server.client(), **PARTS, **SMALL).chat.completions.create(
        model="m", messages=MESSAGES
    )
    assert server.caps("max_tokens") == (None, {SAMPLE_CAP})


async def test_wrap_openai_best_of_sends_the_original_prompts_samples_at_the_callers_cap() -> None:
    server = CapServer()
    client = wrap_openai(server.client(), **PARTS, **SMALL, policy="best_of")

    await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=REPLY_CAP)

    x0 = [b for b in server.bodies if b.get("temperature") and b["messages"] == MESSAGES]
    others = [b for b in server.bodies if b.get("temperature") and b["messages"] != MESSAGES]
    assert x0 and {b["max_tokens"] for b in x0} == {REPLY_CAP}
    assert others and {b["max_tokens"] for b in others} == {SAMPLE_CAP}


async def test_the_proxy_upstream_gives_the_body_cap_to_the_reply_only() -> None:
    server = CapServer()
    upstream = OpenAIUpstream("http://fake.test/v1")
    upstream.client = server.client()
    config = GuardConfig(**{**SMALL, "perturbation": "none", "n_perturbations": 0})

    body = {"model": "m", "messages": MESSAGES, "max_tokens": REPLY_CAP}
    await upstream.complete(body, config)

    assert server.caps("max_tokens") == (REPLY_CAP, {SAMPLE_CAP})


def test_the_proxys_token_estimate_counts_best_of_samples_at_the_replys_length() -> None:
    config = GuardConfig(n_perturbations=2, n_samples=3, max_tokens=SAMPLE_CAP)
    annotate = completion_tokens(config, REPLY_CAP)
    best_of = completion_tokens(config.model_copy(update={"policy": "best_of"}), REPLY_CAP)

    assert annotate == REPLY_CAP + 3 * 3 * SAMPLE_CAP
    assert best_of == annotate + 3 * (REPLY_CAP - SAMPLE_CAP)


# -- the proxy's local model -------------------------------------------------------------


class CapLog:
    """(kind of request, cap it was answered at), shared by a model and its copies."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int]] = []


class LocalModel(BaseModel):
    """A local model as the proxy sees one: a Backend with a ``max_tokens`` field."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    max_tokens: int = 256
    seen: CapLog

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            cap = request.max_tokens if request.max_tokens is not None else self.max_tokens
            self.seen.items.append((kind_of(request), cap))
            out.append(Generation(texts=[ANSWER] * request.n, usage=Usage(1, 1, 1)))
        return out


async def test_the_proxys_local_model_gives_the_body_cap_to_the_reply_only() -> None:
    log = CapLog()
    upstream = LocalUpstream(LocalModel(seen=log), "local")
    config = GuardConfig(**{**SMALL, "perturbation": "none", "n_perturbations": 0})

    body = {"model": "local", "messages": MESSAGES, "max_tokens": REPLY_CAP}
    await upstream.complete(body, config)

    assert ("reply", REPLY_CAP) in log.items
    assert {cap for kind, cap in log.items if kind == "sample"} == {SAMPLE_CAP}


# -- GuardedChatModel -------------------------------------------------------------------


class CappedChatModel(ScriptedChatModel):
    """A scripted chat model with a ``max_tokens`` field; logs the cap of each call."""

    max_tokens: int | None = None

    def _generate(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> Any:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        self._log[-1]["max_tokens"] = self.max_tokens
        return result


def test_guarded_chat_model_replies_at_the_models_cap_and_samples_at_the_guards() -> None:
    inner = CappedChatModel(respond=steady(ANSWER), max_tokens=REPLY_CAP)
    chat = GuardedChatModel(model=inner, **PARTS, **SMALL)

    message = chat.invoke(QUESTION)

    assert message.content == ANSWER
    replies = [c for c in inner.calls if c["temperature"] == 0.0]
    samples = [c for c in inner.calls if c["temperature"] != 0.0]
    assert [c["max_tokens"] for c in replies] == [REPLY_CAP]
    assert len(samples) == 6 and {c["max_tokens"] for c in samples} == {SAMPLE_CAP}


def test_guarded_chat_model_best_of_samples_the_original_prompt_at_the_models_cap() -> None:
    inner = CappedChatModel(respond=steady(ANSWER), max_tokens=REPLY_CAP)
    chat = GuardedChatModel(model=inner, **PARTS, **SMALL, policy="best_of")

    chat.invoke(QUESTION)

    samples = [c for c in inner.calls if c["temperature"] != 0.0]
    x0 = {c["max_tokens"] for c in samples if c["prompt"] == QUESTION}
    others = {c["max_tokens"] for c in samples if c["prompt"] != QUESTION}
    assert x0 == {REPLY_CAP} and others == {SAMPLE_CAP}
