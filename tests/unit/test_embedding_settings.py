"""``embedding_max_tokens`` and ``embedding_backend``: validated, passed on, truncating (issue 14).

The truncation tests load a second all-MiniLM-L6-v2 (offline, a few seconds):
the shared one must keep the model's own limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import ConfigurationError, Guard, GuardConfig, ScoringSettings
from uq_guard import _onnx_embedding as onnx_module
from uq_guard import embeddings as embeddings_module
from uq_guard.config_sections import _INTEGER_FIELDS
from uq_guard.embeddings import SentenceTransformerEmbedder, resolve_backend, shared_embedder
from uq_guard.evaluation import rescoring
from uq_guard.evaluation.records import read_records

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks/results/default/nq/records.jsonl"
# "the cat sat on the mat" is one word piece a word: 16 pieces = [CLS] + 14 words + [SEP]
WORDS = ("the cat sat on the mat " * 40).split()


def test_the_defaults_and_their_section() -> None:
    config = GuardConfig()

    assert config.embedding_max_tokens == 64
    assert config.embedding_backend == "auto"
    assert config.scoring.embedding_max_tokens == 64
    assert "embedding_max_tokens" in _INTEGER_FIELDS
    assert GuardConfig(embedding_max_tokens=None).embedding_max_tokens is None
    assert ScoringSettings(embedding_max_tokens=64).embedding_max_tokens == 64


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (4, "greater than or equal to 8"),
        ("64", "should be an int"),
        (True, "should be an int"),
        (64.0, "should be an int"),
        (10**6, "less than or equal to"),
    ],
)
def test_a_bad_embedding_max_tokens_is_refused(value: Any, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        GuardConfig(embedding_max_tokens=value)
    assert "embedding_max_tokens" in str(caught.value)


def test_an_unknown_embedding_backend_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"embedding_backend.*'auto', 'torch' or 'onnx-int8'"
    ):
        GuardConfig(embedding_backend="tensorrt")


def test_onnx_int8_without_onnxruntime_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(onnx_module, "missing_onnx_packages", lambda: ["onnxruntime"])

    with pytest.raises(
        ConfigurationError, match=r"needs onnxruntime: pip install onnxruntime onnx"
    ):
        GuardConfig(embedding_backend="onnx-int8")
    with pytest.raises(ConfigurationError, match="needs onnxruntime"):
        onnx_module.OnnxInt8Encoder("any-model")


def test_the_guard_builds_its_embedder_from_the_settings() -> None:
    guard = Guard(FakeBackend(), embedding_max_tokens=64, device="cpu", embedding_backend="torch")

    assert guard.embedder is shared_embedder(None, "cpu", max_tokens=64, backend="torch")
    assert guard.embedder.max_tokens == 64 and guard.embedder.backend == "torch"
    assert guard.embedder is not shared_embedder(None, "cpu", max_tokens=None, backend="torch")


def test_auto_is_int8_onnx_on_cpu_and_torch_elsewhere(monkeypatch) -> None:
    assert resolve_backend("auto", "cpu") == ("onnx-int8", "cpu")
    assert resolve_backend("auto", "cuda") == ("torch", "cuda")
    assert resolve_backend("onnx-int8", "cuda") == ("onnx-int8", "cpu")
    assert resolve_backend("torch", "cpu") == ("torch", "cpu")
    # the default guard on this CPU machine shares the int8 embedder
    guard = Guard(FakeBackend(), device="cpu")
    assert guard.embedder.backend == "onnx-int8"
    assert guard.embedder is shared_embedder(None, "cpu", max_tokens=64, backend="onnx-int8")

    monkeypatch.setattr(embeddings_module, "missing_onnx_packages", lambda: ["onnxruntime"])
    assert resolve_backend("auto", "cpu") == ("torch", "cpu")  # falls back, never fails
    assert GuardConfig(embedding_backend="auto").embedding_backend == "auto"


def test_the_shared_embedder_is_one_per_token_limit_and_backend() -> None:
    plain = shared_embedder(device="cpu", max_tokens=32, backend="torch")

    assert shared_embedder(device="cpu", max_tokens=32, backend="torch") is plain
    assert shared_embedder(device="cpu", max_tokens=48, backend="torch") is not plain
    onnx = shared_embedder(device="cuda", max_tokens=32, backend="onnx-int8")
    assert onnx is not plain and onnx.device == "cpu"  # ONNX Runtime here runs on CPU
    assert onnx._model is None  # nothing loads until the first encode


def test_rescore_embeds_with_the_records_own_embedding_settings(monkeypatch) -> None:
    record = read_records(RECORDS)[0]
    asked: list[tuple[Any, ...]] = []

    class Fake:
        def encode(self, texts: list[str]) -> np.ndarray:
            rows = np.random.default_rng(len(texts)).normal(size=(len(texts), 8))
            return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    def fake_shared(model: Any = None, device: Any = None, **kwargs: Any) -> Fake:
        asked.append((model, kwargs))
        return Fake()

    monkeypatch.setattr(rescoring, "shared_embedder", fake_shared)
    cut = record.model_copy(
        update={"scoring": {**record.scoring, "embedding_max_tokens": 64}}, deep=True
    )

    rescoring.rescore([record, cut], n_bootstrap=0)

    assert asked == [
        (None, {"max_tokens": None, "backend": "torch"}),  # older records: never cut
        (None, {"max_tokens": 64, "backend": "torch"}),
    ]


def test_embedding_settings_are_operator_only_on_the_server() -> None:
    policy = pytest.importorskip("uq_guard_server.policy")

    assert {"embedding_max_tokens", "embedding_backend"} <= policy.OPERATOR_ONLY_SETTINGS


@pytest.fixture(scope="module")
def cut_to_16() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(device="cpu", max_tokens=16)


def test_a_text_is_embedded_as_its_first_max_tokens_word_pieces(cut_to_16) -> None:
    long_text, prefix, other = " ".join(WORDS), " ".join(WORDS[:14]), " ".join(WORDS[:20])

    rows = cut_to_16.encode([long_text, prefix, other])

    assert cut_to_16.model.max_seq_length == 16
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-5)
    np.testing.assert_allclose(rows[0], rows[2], atol=1e-5)


def test_without_a_limit_the_whole_text_counts() -> None:
    full = shared_embedder(device="cpu")  # max_tokens None: the model's own 256

    rows = full.encode([" ".join(WORDS[:100]), " ".join(WORDS[:14])])

    assert full.model.max_seq_length == 256
    assert not np.allclose(rows[0], rows[1], atol=1e-3)


def test_a_limit_above_the_models_own_keeps_the_models() -> None:
    embedder = SentenceTransformerEmbedder(device="cpu", max_tokens=10_000)

    assert embedder.max_tokens == 10_000
    assert embedder.model.max_seq_length == 256
