"""The default embedder: real all-MiniLM-L6-v2 (offline), batched and cached."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from uq_guard.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    SentenceTransformerEmbedder,
    pick_device,
    shared_embedder,
)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


@pytest.fixture
def fresh(embedder: SentenceTransformerEmbedder):
    """An embedder with its own empty cache, sharing the loaded model (no second load)."""

    def make(cache_size: int = 50_000) -> SentenceTransformerEmbedder:
        new = SentenceTransformerEmbedder(cache_size=cache_size, device="cpu")
        new._model = embedder._load()
        return new

    return make


def unique(*texts: str) -> list[str]:
    """Texts no other test has embedded (the shared embedder's cache outlives tests)."""
    tag = uuid.uuid4().hex[:8]
    return [f"{text} ({tag})" for text in texts]


def test_rows_are_unit_norm_float32(embedder) -> None:
    vectors = embedder.encode(["The cat sat on the mat.", "Quantum chromodynamics.", ""])

    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_identical_texts_get_identical_rows(embedder) -> None:
    vectors = embedder.encode(["Paris is lovely.", "Rome is old.", "Paris is lovely."])

    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])


def test_related_texts_are_close_and_unrelated_ones_are_not(embedder) -> None:
    question, answer, other = embedder.encode(
        [
            "What is the capital of France?",
            "Paris is the capital of France.",
            "Bananas are rich in potassium.",
        ]
    )

    assert float(question @ answer) > 0.7
    assert float(question @ other) < 0.3


def test_an_empty_batch_gives_an_empty_matrix(embedder) -> None:
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.dimension == 384


def test_a_second_encode_of_the_same_texts_hits_the_cache(embedder) -> None:
    texts = unique("alpha beta", "gamma delta", "epsilon")
    first = embedder.encode(texts)
    encoded = embedder.texts_encoded

    second = embedder.encode(texts)

    assert embedder.texts_encoded == encoded
    np.testing.assert_array_equal(first, second)


def test_only_new_texts_reach_the_model(embedder) -> None:
    seen, new = unique("seen before"), unique("never seen")
    embedder.encode(seen)
    encoded = embedder.texts_encoded

    embedder.encode([*seen, *new])

    assert embedder.texts_encoded == encoded + 1


def test_duplicates_in_one_call_are_encoded_once(fresh) -> None:
    embedder = fresh()

    vectors = embedder.encode(["same", "other", "same", "same", "other"])

    assert embedder.texts_encoded == 2
    assert vectors.shape == (5, 384)
    np.testing.assert_array_equal(vectors[0], vectors[3])


def test_the_cache_evicts_the_least_recently_used_text(fresh) -> None:
    embedder = fresh(cache_size=2)
    embedder.encode(["a"])
    embedder.encode(["b"])
    embedder.encode(["a"])  # a is now more recent than b
    embedder.encode(["c"])  # evicts b
    assert embedder.texts_encoded == 3

    embedder.encode(["a"])
    assert embedder.texts_encoded == 3  # still cached
    embedder.encode(["b"])
    assert embedder.texts_encoded == 4  # was evicted, encoded again


def test_a_batch_larger_than_the_cache_still_returns_every_row(fresh) -> None:
    embedder = fresh(cache_size=1)

    vectors = embedder.encode(["one", "two", "three"])

    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_cached_rows_equal_freshly_encoded_rows(embedder, fresh) -> None:
    texts = ["Berlin is in Germany.", "Madrid is in Spain."]
    embedder.encode(texts)

    np.testing.assert_allclose(fresh().encode(texts), embedder.encode(texts), atol=1e-6)


def test_the_shared_embedder_is_one_per_model_and_device(embedder) -> None:
    assert shared_embedder() is embedder
    assert shared_embedder(DEFAULT_EMBEDDING_MODEL) is embedder
    assert isinstance(embedder, Embedder)


def test_constructing_an_embedder_loads_nothing() -> None:
    lazy = SentenceTransformerEmbedder(device="cpu")

    assert lazy._model is None
    assert lazy.texts_encoded == 0


def test_an_explicit_device_is_kept() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device(None) in ("cuda", "mps", "cpu")
