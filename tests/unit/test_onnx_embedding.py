"""The int8 ONNX embedder (``embedding_backend="onnx-int8"``, issue 14).

The export tests need the ``onnx`` extra and are skipped, with the reason,
only when onnxruntime or onnx is missing; the bundled all-MiniLM-L6-v2 is
exported once per test session into a temporary ``$UQ_GUARD_HOME``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from uq_guard import ConfigurationError
from uq_guard import _onnx_embedding as onnx_module
from uq_guard._cpus import usable_cpus
from uq_guard.embeddings import (
    SentenceTransformerEmbedder,
    resolve_model_location,
    shared_embedder,
)

TEXTS = [
    "What is the capital of France?",
    "Paris is the capital of France.",
    "Bananas are rich in potassium.",
    "The last time anyone was on the moon was December 1972.",
    "",
    "word " * 400,
]


class Transformer:
    """Stands in for a sentence-transformers module of that name."""


class Pooling:
    def __init__(self, **config: object) -> None:
        self.config = config

    def get_config_dict(self) -> dict[str, object]:
        return self.config


class Dense:
    pass


@pytest.mark.parametrize(
    "modules",
    [
        [Transformer(), Pooling(pooling_mode="cls")],
        [Transformer(), Pooling(pooling_mode="mean"), Dense()],
        [Transformer(), Pooling(pooling_mode_mean_tokens=True, pooling_mode_max_tokens=True)],
        [Transformer()],
    ],
)
def test_models_other_than_mean_pooled_ones_are_refused(modules) -> None:
    with pytest.raises(ConfigurationError, match="embedding_backend='torch'"):
        onnx_module._transformer_of(modules)


def test_the_export_folder_depends_on_the_model_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("UQ_GUARD_HOME", str(tmp_path / "home"))
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    before = onnx_module.export_folder(str(model))

    (model / "config.json").write_text('{"changed": true}')

    assert before.parent == tmp_path / "home" / "onnx"
    assert before.name.startswith("my-model-")
    assert onnx_module.export_folder(str(model)) != before
    assert onnx_module.export_folder("org/name").name.startswith("org--name-")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Iterator[Path]:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra)")
    pytest.importorskip("onnx", reason="onnx is not installed (the onnx extra)")
    folder = tmp_path_factory.mktemp("uq_guard_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UQ_GUARD_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def onnx_embedder(home) -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(backend="onnx-int8")
    embedder.encode(["load and export"])
    return embedder


def test_int8_rows_are_close_to_the_fp32_model(onnx_embedder) -> None:
    rows = onnx_embedder.encode(TEXTS)
    reference = shared_embedder(device="cpu").encode(TEXTS)

    assert rows.shape == (len(TEXTS), 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4)
    agreement = np.sum(rows * reference, axis=1)
    assert agreement.min() > 0.95 and agreement.mean() > 0.98, agreement
    question, answer, other = rows[:3]
    assert float(question @ answer) > 0.7 and float(question @ other) < 0.3


def test_the_export_folder_holds_the_model_and_its_tokenizer(onnx_embedder, home) -> None:
    folder = onnx_embedder.model.folder

    assert folder.parent == home / "onnx"
    assert (folder / "model_int8.onnx").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.parent.glob("*.tmp-*"))  # the scratch folder is gone
    assert not (folder / "model_fp32.onnx").exists()  # only the int8 model is kept


def test_a_second_encoder_loads_the_cached_export_without_exporting(onnx_embedder, monkeypatch):
    def no_export(*_: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_module, "_export", no_export)
    second = SentenceTransformerEmbedder(backend="onnx-int8", max_tokens=64)

    # int8 activations are scaled per batch, so compare batches of the same texts
    rows, same_batch = second.encode(TEXTS[:3]), onnx_embedder.model.encode(TEXTS[:3])
    np.testing.assert_allclose(rows, same_batch, atol=1e-6)
    assert second.model.folder == onnx_embedder.model.folder


def test_int8_texts_are_cut_to_max_tokens(home) -> None:
    cut = SentenceTransformerEmbedder(backend="onnx-int8", max_tokens=16)
    words = ("the cat sat on the mat " * 40).split()

    rows = cut.encode([" ".join(words), " ".join(words[:14]), " ".join(words[:30])])

    assert cut.model.max_seq_length == 16
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-5)
    np.testing.assert_allclose(rows[0], rows[2], atol=1e-5)


def test_texts_run_on_several_threads_give_the_rows_of_one_thread(onnx_embedder) -> None:
    location = resolve_model_location(None)  # the bundled model, exported by the fixture
    one = onnx_module.OnnxInt8Encoder(location, max_tokens=64, threads=1)
    three = onnx_module.OnnxInt8Encoder(location, max_tokens=64, threads=3)
    texts = [*TEXTS, *(f"question number {i} about the moon" for i in range(20))]

    assert one.threads == 1 and three.threads == 3
    np.testing.assert_array_equal(three.encode(texts), one.encode(texts))  # bit for bit


def test_the_embedding_threads_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(onnx_module.THREADS_ENV, raising=False)
    assert onnx_module.default_threads() == min(usable_cpus(), 8)

    monkeypatch.setenv(onnx_module.THREADS_ENV, " 3 ")
    assert onnx_module.default_threads() == 3
    assert onnx_module.default_threads({onnx_module.THREADS_ENV: "5"}) == 5


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_embedding_threads_value_is_refused_with_the_variable_named(
    monkeypatch, value: str
) -> None:
    monkeypatch.setenv(onnx_module.THREADS_ENV, value)

    with pytest.raises(ConfigurationError, match=rf"UQ_GUARD_EMBEDDING_THREADS='{value}'"):
        onnx_module.default_threads()


@pytest.mark.parametrize("threads", [0, -1, True])
def test_a_bad_threads_argument_is_refused_before_any_export(monkeypatch, threads) -> None:
    monkeypatch.setattr(onnx_module, "missing_onnx_packages", lambda: [])
    monkeypatch.setattr(onnx_module, "_export", lambda *_: pytest.fail("exported"))

    with pytest.raises(ConfigurationError, match="threads="):
        onnx_module.OnnxInt8Encoder("any-model", threads=threads)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_runs_texts_on_threads_of_its_own(onnx_embedder) -> None:
    encoder = onnx_module.OnnxInt8Encoder(resolve_model_location(None), threads=2)
    expected = encoder.encode(TEXTS[:4])  # the parent's threads exist now

    pid = os.fork()
    if pid == 0:  # the child: its inherited pool has no threads in it
        try:
            ok = np.array_equal(encoder.encode(TEXTS[:4]), expected)
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung encoding")
    assert os.waitstatus_to_exitcode(done[1]) == 0
