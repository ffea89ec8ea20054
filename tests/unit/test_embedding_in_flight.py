"""Concurrent ``encode`` calls embed each distinct text once, in shared batches (issue 14).

A counting fake model stands in for sentence-transformers, so the tests see
exactly which texts reach the model and when; some block it on an event to
make the overlap between threads certain rather than likely.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from uq_guard.embeddings import SentenceTransformerEmbedder


def vector_of(text: str) -> np.ndarray:
    """A fixed unit vector per text (the fake model's "embedding")."""
    row = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=4).astype(np.float32)
    return row / np.linalg.norm(row)


class CountingModel:
    """Counts every text it encodes; can hold each call until ``release`` is set."""

    def __init__(self, *, delay_s: float = 0.0, hold: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.delay_s = delay_s
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_next = False
        self._lock = threading.Lock()

    @property
    def counts(self) -> Counter[str]:
        return Counter(text for call in self.calls for text in call)

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        self.started.set()
        assert self.release.wait(10), "the test never released the model"
        time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model broke")
        return np.stack([vector_of(t) for t in texts])

    def get_sentence_embedding_dimension(self) -> int:
        return 4


def embedder_with(model: CountingModel, cache_size: int = 50_000) -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(device="cpu", cache_size=cache_size)
    embedder._model = model
    return embedder


def in_thread(target: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target(*args)`` in a started thread; its result or exception lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = target(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_many_threads_with_overlapping_texts_encode_each_text_once() -> None:
    model = CountingModel(delay_s=0.05)
    embedder = embedder_with(model)
    texts = [f"text {i}" for i in range(12)]
    # thread k asks for a window of 6 texts: neighbours share 5 of them
    windows = [texts[k : k + 6] + texts[k : k + 2] for k in range(7)]
    barrier = threading.Barrier(len(windows))

    def call(window: list[str]) -> np.ndarray:
        barrier.wait()
        return embedder.encode(window)

    runs = [in_thread(call, window) for window in windows]
    for thread, _ in runs:
        thread.join(30)

    assert all(count == 1 for count in model.counts.values()), model.counts
    assert set(model.counts) == set(texts)
    assert embedder.texts_encoded == len(texts)
    for window, (_, out) in zip(windows, runs, strict=True):
        assert "error" not in out
        np.testing.assert_array_equal(out["value"], np.stack([vector_of(t) for t in window]))


def test_a_text_in_flight_is_waited_for_not_encoded_again_even_without_a_cache() -> None:
    model = CountingModel(hold=True)
    embedder = embedder_with(model, cache_size=0)  # only the in-flight map can share "y"

    first, first_out = in_thread(embedder.encode, ["x", "y"])
    assert model.started.wait(10)
    second, second_out = in_thread(embedder.encode, ["y", "z"])
    wait_until(lambda: "z" in embedder._in_flight)  # the second call has claimed z, waits for y
    model.release.set()
    first.join(10)
    second.join(10)

    assert model.calls == [["x", "y"], ["z"]]
    np.testing.assert_array_equal(second_out["value"][0], first_out["value"][1])
    assert embedder._in_flight == {}


def test_calls_that_arrive_while_the_model_is_busy_share_its_next_batch() -> None:
    model = CountingModel(hold=True)
    embedder = embedder_with(model)

    first, _ = in_thread(embedder.encode, ["a1", "a2"])
    assert model.started.wait(10)
    later = [in_thread(embedder.encode, [f"{name}1", f"{name}2"]) for name in "bcd"]
    wait_until(lambda: len(embedder._pending) == 6)  # all three queued behind the first batch
    model.release.set()
    for thread, _ in [(first, None), *later]:
        thread.join(10)

    assert model.calls[0] == ["a1", "a2"]
    assert sorted(model.calls[1]) == ["b1", "b2", "c1", "c2", "d1", "d2"]
    assert len(model.calls) == 2 and embedder.batches_run == 2
    for name, (_, out) in zip("bcd", later, strict=True):
        rows = np.stack([vector_of(f"{name}1"), vector_of(f"{name}2")])
        np.testing.assert_array_equal(out["value"], rows)


def test_a_call_whose_texts_are_cached_does_not_wait_for_the_model() -> None:
    model = CountingModel(hold=True)
    embedder = embedder_with(model)
    model.release.set()
    cached = embedder.encode(["cached"])
    model.release.clear()

    slow, _ = in_thread(embedder.encode, ["slow one"])
    assert model.started.wait(10)
    fast, fast_out = in_thread(embedder.encode, ["cached", "cached"])
    fast.join(5)

    assert not fast.is_alive(), "a cache hit waited for another call's encode"
    np.testing.assert_array_equal(fast_out["value"], np.vstack([cached, cached]))
    model.release.set()
    slow.join(10)


def test_a_model_failure_reaches_every_waiter_and_the_text_can_be_retried() -> None:
    model = CountingModel(hold=True)
    model.fail_next = True
    embedder = embedder_with(model)

    owner, owner_out = in_thread(embedder.encode, ["shared"])
    assert model.started.wait(10)
    waiter, waiter_out = in_thread(embedder.encode, ["shared", "own"])
    wait_until(lambda: "own" in embedder._in_flight)
    model.release.set()
    owner.join(10)
    waiter.join(10)

    assert isinstance(owner_out.get("error"), RuntimeError)
    assert isinstance(waiter_out.get("error"), RuntimeError)
    assert embedder._in_flight == {}
    np.testing.assert_array_equal(embedder.encode(["shared"])[0], vector_of("shared"))
    assert model.counts["shared"] == 2  # the failed encode, then the retry


def test_rows_keep_the_order_and_duplicates_of_the_call() -> None:
    embedder = embedder_with(CountingModel())

    rows = embedder.encode(["b", "a", "b"])

    np.testing.assert_array_equal(rows, np.stack([vector_of(t) for t in ["b", "a", "b"]]))
    assert embedder.encode([]).shape == (0, 4)


@pytest.mark.parametrize("bad", [0, -3, True])
def test_a_bad_max_tokens_is_refused(bad: Any) -> None:
    from uq_guard import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_tokens"):
        SentenceTransformerEmbedder(device="cpu", max_tokens=bad)


def test_an_unknown_backend_is_refused() -> None:
    from uq_guard import ConfigurationError

    with pytest.raises(ConfigurationError, match="onnx-int8"):
        SentenceTransformerEmbedder(backend="tensorrt")  # type: ignore[arg-type]
