"""``embedding_model="openai:URL#model"``: spec, batching, retries, checks, on a fake transport.

The real server (infinity serving the bundled MiniLM) is in
``tests/integration/test_remote_embeddings.py``; here ``httpx.MockTransport``
plays the server, so nothing touches the network.
"""

from __future__ import annotations

import base64
import functools
import json

import httpx
import numpy as np
import pytest

import uq_guard.embeddings as embeddings
from tests.unit.fake_backend import ANSWER, QUESTION, FakeBackend
from uq_guard import ConfigurationError, DegradedResultError, EmbeddingError, Guard, GuardConfig
from uq_guard.calibration import Calibrator, PlattMapping
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.remote_embedding import (
    API_KEY_ENV,
    RemoteEncoder,
    RemoteSpec,
    parse_remote_spec,
)

URL = "http://embed.test/v1"
SPEC = f"openai:{URL}#sentence-transformers/all-MiniLM-L6-v2"
DIM = 8


def raw_vector(text: str) -> list[float]:
    """A deterministic, unnormalised vector per text (length grows with the text)."""
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return (rng.normal(size=DIM) * (1 + len(text))).tolist()


class FakeServer:
    """An OpenAI-style /embeddings endpoint: records requests, can fail the first few."""

    def __init__(self, *, fail: list[httpx.Response | Exception] | None = None, shuffle=False):
        self.requests: list[httpx.Request] = []
        self.fail = list(fail or [])
        self.shuffle = shuffle

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail:
            outcome = self.fail.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        body = json.loads(request.content)
        data = [
            {"object": "embedding", "index": i, "embedding": raw_vector(text)}
            for i, text in enumerate(body["input"])
        ]
        if self.shuffle:
            data.reverse()
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"]})

    def inputs(self) -> list[list[str]]:
        return [json.loads(r.content)["input"] for r in self.requests]


def encoder(server: FakeServer, **kwargs) -> RemoteEncoder:
    return RemoteEncoder(SPEC, transport=httpx.MockTransport(server), first_wait_s=0.0, **kwargs)


# -- the spec -------------------------------------------------------------------


def test_a_spec_splits_into_base_url_and_model():
    spec = parse_remote_spec("openai:https://api.example.com/v1/#text-embedding-3-small")
    assert spec == RemoteSpec(url="https://api.example.com/v1", model="text-embedding-3-small")
    assert spec.endpoint == "https://api.example.com/v1/embeddings"
    # the model id may itself hold slashes, colons or '#'
    assert parse_remote_spec("openai:http://h:8/v1#org/m:q#x").model == "org/m:q#x"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("openai:", "has no URL"),
        ("openai:#m", "has no URL"),
        ("openai:http://h:1/v1", "names no model"),
        ("openai:http://h:1/v1#", "names no model"),
        ("openai:ftp://h/v1#m", r"not an http\(s\) URL"),
        ("openai:localhost:8080/v1#m", r"not an http\(s\) URL"),
        ("openai:http:///v1#m", r"not an http\(s\) URL"),
        ("openai:http://h/v1?x=1#m", r"without \?query"),
    ],
)
def test_a_malformed_spec_is_a_configuration_error_naming_the_fix(spec, says):
    with pytest.raises(ConfigurationError, match=says) as caught:
        parse_remote_spec(spec)
    assert "openai:http://host:port/v1#model" in str(caught.value)
    with pytest.raises(ConfigurationError, match=says):
        GuardConfig(embedding_model=spec)
    with pytest.raises(ConfigurationError, match=says):
        SentenceTransformerEmbedder(spec)


def test_a_well_formed_spec_is_a_valid_setting():
    assert GuardConfig(embedding_model=SPEC).embedding_model == SPEC


# -- batching, order, normalisation ---------------------------------------------------


def test_texts_go_in_batches_and_come_back_in_order_unit_normalised():
    server = FakeServer(shuffle=True)  # the server lists them in another order: index rules
    texts = [f"text number {i}" for i in range(70)]
    vectors = encoder(server, batch_size=32).encode(texts)
    assert [len(batch) for batch in server.inputs()] == [32, 32, 6]
    assert vectors.dtype == np.float32 and vectors.shape == (70, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = np.array([raw_vector(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    body = json.loads(server.requests[0].content)
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["encoding_format"] == "float"
    assert str(server.requests[0].url) == f"{URL}/embeddings"


def test_an_explicit_batch_size_wins_and_an_empty_text_goes_as_a_space():
    server = FakeServer()
    encoder(server).encode(["a", "", "c"], batch_size=2)
    assert server.inputs() == [["a", " "], ["c"]]


def test_base64_embeddings_are_read_too():
    def handler(request: httpx.Request) -> httpx.Response:
        vector = np.array([3.0, 4.0], dtype="<f4").tobytes()
        item = {"index": 0, "embedding": base64.b64encode(vector).decode()}
        return httpx.Response(200, json={"data": [item]})

    remote = RemoteEncoder(SPEC, transport=httpx.MockTransport(handler))
    np.testing.assert_allclose(remote.encode(["x"]), [[0.6, 0.8]], atol=1e-7)


# -- the API key ------------------------------------------------------------------


def test_the_api_key_comes_from_its_own_variable_never_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    server = FakeServer()
    encoder(server).encode(["a"])
    assert "authorization" not in server.requests[0].headers
    monkeypatch.setenv(API_KEY_ENV, "embed-key")
    encoder(server).encode(["a"])
    assert server.requests[1].headers["authorization"] == "Bearer embed-key"


# -- failures ---------------------------------------------------------------------


def test_transient_failures_are_retried():
    server = FakeServer(
        fail=[
            httpx.Response(503, text="loading"),
            httpx.ConnectError("refused"),
        ]
    )
    vectors = encoder(server, max_retries=2).encode(["a", "b"])
    assert vectors.shape == (2, DIM) and len(server.requests) == 3


def test_a_server_that_stays_down_raises_an_embedding_error_naming_it():
    server = FakeServer(fail=[httpx.ConnectError("refused")] * 5)
    with pytest.raises(EmbeddingError, match=r"http://embed.test/v1/embeddings could not be"):
        encoder(server, max_retries=2).encode(["a"])
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, API_KEY_ENV), (404, "base URL"), (400, "bad input"), (413, "batch_size")],
)
def test_a_client_error_is_not_retried_and_says_what_the_server_said(status, hint):
    server = FakeServer(fail=[httpx.Response(status, text="bad input")])
    with pytest.raises(EmbeddingError, match=f"answered {status}") as caught:
        encoder(server).encode(["a"])
    assert hint in str(caught.value) and len(server.requests) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"data": []},
        {"error": "nope"},
        {"data": [{"index": 0}]},
        '{"data": [{"index": 0, "embedding": [1.0, NaN]}]}',
        "<html>busy</html>",
    ],
)
def test_a_malformed_answer_is_an_embedding_error(payload):
    content = payload if isinstance(payload, str) else json.dumps(payload)
    remote = RemoteEncoder(
        SPEC, transport=httpx.MockTransport(lambda r: httpx.Response(200, content=content))
    )
    with pytest.raises(EmbeddingError, match="embedding server"):
        remote.encode(["a"])


# -- inside the cached embedder and the guard --------------------------------------------


@pytest.fixture
def served(monkeypatch) -> FakeServer:
    """Every RemoteEncoder the embedders build talks to one fake server."""
    server = FakeServer()
    transport = httpx.MockTransport(server)
    monkeypatch.setattr(
        embeddings,
        "RemoteEncoder",
        functools.partial(RemoteEncoder, transport=transport, first_wait_s=0.0),
    )
    return server


def test_the_cached_embedder_sends_each_text_once(served):
    embedder = SentenceTransformerEmbedder(SPEC, max_tokens=64, backend="onnx-int8", device="cuda")
    assert (embedder.backend, embedder.device, embedder.max_tokens) == ("remote", "remote", None)
    assert embedder.batch_size == 32
    first = embedder.encode(["a", "b", "a"])
    again = embedder.encode(["b", "c"])
    assert served.inputs() == [["a", "b"], ["c"]]
    np.testing.assert_array_equal(first[1], again[0])
    assert embedder.dimension == DIM
    assert SentenceTransformerEmbedder(SPEC, batch_size=5).batch_size == 5


def test_one_shared_embedder_per_server_whatever_the_local_settings():
    one = shared_embedder(SPEC, "cpu", max_tokens=64, backend="auto")
    assert shared_embedder(SPEC, None, max_tokens=None, backend="torch") is one
    assert shared_embedder(SPEC + "-other") is not one


async def test_a_guard_over_a_dead_server_keeps_the_reply_and_says_why(monkeypatch):
    server = FakeServer(fail=[httpx.ConnectError("connection refused")] * 10)
    monkeypatch.setattr(
        embeddings,
        "RemoteEncoder",
        functools.partial(RemoteEncoder, transport=httpx.MockTransport(server), first_wait_s=0.0),
    )
    embedder = SentenceTransformerEmbedder(SPEC)
    config = {
        "n_perturbations": 0,
        "perturbation": "none",
        "n_samples": 3,
        "similarity": "shifted_cosine",
        "n_bootstrap": 0,
    }
    result = await Guard(FakeBackend(ANSWER), embedder=embedder, **config).arun(QUESTION)
    assert result.text == ANSWER
    report = result.report
    assert report.degraded and report.confidence is None
    reasons = " ".join(report.degraded_reasons)
    assert "EmbeddingError" in reasons
    assert "http://embed.test/v1/embeddings could not be reached" in reasons
    with pytest.raises(DegradedResultError, match="EmbeddingError"):
        await Guard(FakeBackend(ANSWER), embedder=embedder, strict=True, **config).arun(QUESTION)


# -- the shipped calibration ---------------------------------------------------------


def test_a_calibration_fitted_on_local_minilm_holds_for_a_server_serving_it():
    calibrator = Calibrator(
        mapping=PlattMapping(slope=1.0, intercept=0.0), fitted_with={"embedding_model": None}
    )
    for same in (
        SPEC,
        f"openai:{URL}#all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
    ):
        assert calibrator.settings_note({"embedding_model": same}) == ""
    note = calibrator.settings_note({"embedding_model": f"openai:{URL}#bge-small"})
    assert "embedding_model=None" in note and "#bge-small" in note
