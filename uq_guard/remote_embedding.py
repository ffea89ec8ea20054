"""Embeddings from an OpenAI-compatible server: ``embedding_model="openai:URL#model"``.

Any server with the OpenAI ``POST {URL}/embeddings`` route will do: OpenAI,
Hugging Face TEI, vLLM, infinity, llama.cpp. ``URL`` is the base URL an
``openai`` client would take (usually ending in ``/v1``) and ``model`` the id
the server knows the model by; both are required. A fleet of guards (e.g.
``uq-guard serve`` replicas) then shares one GPU embedding server instead of
loading a model each.

:class:`RemoteEncoder` stands where a ``SentenceTransformer`` stands inside
:class:`~uq_guard.embeddings.SentenceTransformerEmbedder` (as
:class:`~uq_guard._onnx_embedding.OnnxInt8Encoder` does), so the LRU cache,
the sharing of texts in flight across threads and the micro-batching are the
embedder's, not repeated here. This module sends the texts in requests of at
most ``batch_size`` inputs (32 by default: TEI's default cap per request),
retries transient failures (connection errors, timeouts, 408/429/5xx, with
exponential backoff that honours ``Retry-After``: the classification of
:mod:`uq_guard._retry`), checks the answer (one vector per input, one
length, finite) and unit-normalises the vectors, whatever the server did.

The API key, when the server wants one, is read from the environment variable
``UQ_GUARD_EMBEDDING_API_KEY`` (sent as ``Authorization: Bearer``). It is
deliberately not ``OPENAI_API_KEY``: a proxy's OpenAI key must not travel to
an embedding server on the LAN. For OpenAI itself, set
``UQ_GUARD_EMBEDDING_API_KEY=$OPENAI_API_KEY``.

What the server decides, not the guard: truncation of long texts (the server's
own limit; ``embedding_max_tokens`` does not apply), the precision it runs in
(``embedding_backend`` and ``device`` do not apply). A server running the
bundled all-MiniLM-L6-v2 in fp32 gives the local torch embedder's vectors to
2e-7 (tested against infinity: ``tests/integration/test_remote_embeddings.py``).
An empty text is sent as one space (OpenAI refuses empty inputs; for BERT
tokenizers both are the same two special tokens).

A calibration records the ``embedding_model`` it was fitted with; a spec counts
as the model its ``#model`` names (:func:`~uq_guard.embeddings.embedding_model_identity`),
so ``#sentence-transformers/all-MiniLM-L6-v2`` keeps a calibration fitted with
the bundled local model (SmolLM2's shipped one) free of a settings note.

Failures: after its retries a batch raises :class:`~uq_guard.EmbeddingError`
naming the server and its answer. In a guarded call that degrades the report
("scoring failed (EmbeddingError): ..."), it never loses the reply.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from uq_guard._exceptions import ConfigurationError, EmbeddingError
from uq_guard._retry import backoff_honouring_retry_after, is_retryable, retry_after_seconds

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BATCH_SIZE",
    "REMOTE_PREFIX",
    "RemoteEncoder",
    "RemoteSpec",
    "checked_embedding_model",
    "is_remote_spec",
    "parse_remote_spec",
]

REMOTE_PREFIX = "openai:"
#: The environment variable holding the embedding server's API key (none: no header sent).
API_KEY_ENV = "UQ_GUARD_EMBEDDING_API_KEY"
#: Inputs per request: TEI's default ``--max-client-batch-size``; OpenAI takes up to 2048.
DEFAULT_BATCH_SIZE = 32
_FORM = "openai:http://host:port/v1#model"


@dataclass(frozen=True)
class RemoteSpec:
    """A parsed ``openai:URL#model``: the server's base URL (no trailing slash) and model id."""

    url: str
    model: str

    @property
    def endpoint(self) -> str:
        """Where the embeddings are posted: ``{url}/embeddings``."""
        return f"{self.url}/embeddings"

    def __str__(self) -> str:
        return f"{REMOTE_PREFIX}{self.url}#{self.model}"


def is_remote_spec(model: object) -> bool:
    """Whether an ``embedding_model`` setting names a server (``openai:...``), not a local model."""
    return isinstance(model, str) and model.startswith(REMOTE_PREFIX)


def parse_remote_spec(spec: str) -> RemoteSpec:
    """Split ``openai:URL#model`` into its base URL and model id.

    Raises:
        ConfigurationError: no ``openai:`` prefix, no URL, a URL that is not
            ``http(s)://host...``, or no ``#model``.
    """
    if not is_remote_spec(spec):
        raise ConfigurationError(f"embedding server spec {spec!r} must start with 'openai:'")
    url, hash_sign, model = spec.removeprefix(REMOTE_PREFIX).partition("#")
    url, model = url.strip(), model.strip()
    if not url:
        raise ConfigurationError(f"embedding server spec {spec!r} has no URL: use {_FORM}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"embedding server spec {spec!r}: {url!r} is not an http(s) URL: use {_FORM}"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"embedding server spec {spec!r}: the URL must be a base URL without ?query: "
            f"use {_FORM}"
        )
    if not hash_sign or not model:
        raise ConfigurationError(
            f"embedding server spec {spec!r} names no model: add '#model' (the id the server "
            f"knows it by), as in {_FORM}"
        )
    return RemoteSpec(url=url.rstrip("/"), model=model)


def checked_embedding_model(model: str | None) -> str | None:
    """``model`` when it is no server spec or a well-formed one (a pydantic validator).

    Raises:
        ConfigurationError: a malformed ``openai:...`` spec (also a ValueError).
    """
    if is_remote_spec(model):
        parse_remote_spec(model)  # type: ignore[arg-type]
    return model


class RemoteEncoder:
    """An OpenAI-compatible ``/embeddings`` endpoint behind ``SentenceTransformer.encode``'s call.

    Args:
        spec: ``"openai:URL#model"`` or a parsed :class:`RemoteSpec`.
        batch_size: inputs per request when ``encode`` is given none.
        api_key: sent as ``Authorization: Bearer``; None reads ``API_KEY_ENV``
            (unset or empty: no header).
        timeout_s: per request.
        max_retries: resends of a batch after a transient failure.
        first_wait_s: the first backoff; doubling up to ``max_wait_s``
            (a larger ``Retry-After`` from the server wins, up to ``max_wait_s``).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).

    Nothing is sent until the first ``encode``. Thread-safe (``httpx.Client`` is).

    Raises:
        ConfigurationError: a malformed spec or a ``batch_size`` under 1.
    """

    def __init__(
        self,
        spec: str | RemoteSpec,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        first_wait_s: float = 0.5,
        max_wait_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, RemoteSpec) else parse_remote_spec(spec)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size!r}: give a positive int")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        import httpx  # here, not at the top: ``import uq_guard`` stays free of it

        key = os.environ.get(API_KEY_ENV) if api_key is None else api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)
        self._dimension: int | None = None
        self._lock = threading.Lock()
        self.requests_sent = 0  # requests that reached the transport, retries included

    def __repr__(self) -> str:
        return f"RemoteEncoder({str(self.spec)!r}, batch_size={self.batch_size})"

    def close(self) -> None:
        """Close the HTTP connections (the encoder must not be used afterwards)."""
        self._client.close()

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
        **_: Any,
    ) -> np.ndarray:
        """Embeddings of ``texts`` (float32 rows in order), one request per ``batch_size`` texts.

        Rows are unit-normalised unless ``normalize_embeddings`` is false; the
        other arguments are accepted for ``SentenceTransformer.encode``'s
        sake. Raises :class:`~uq_guard.EmbeddingError` when a batch fails for
        good.
        """
        texts = list(texts)
        size = batch_size or self.batch_size
        rows = [self._embed_batch(texts[i : i + size]) for i in range(0, len(texts), size)]
        if not rows:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        vectors = np.concatenate(rows) if len(rows) > 1 else rows[0]
        if normalize_embeddings:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1.0)
        return vectors.astype(np.float32, copy=False)

    def get_sentence_embedding_dimension(self) -> int:
        """The length of the server's vectors (asks the server once when not yet known)."""
        if self._dimension is None:
            self._embed_batch([" "])
        assert self._dimension is not None
        return self._dimension

    get_embedding_dimension = get_sentence_embedding_dimension

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """One request (retried while transient); the raw vectors, checked."""
        import httpx

        def server_says(state: RetryCallState) -> float | None:
            return retry_after_seconds(state.outcome.exception() if state.outcome else None)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=backoff_honouring_retry_after(self.first_wait_s, self.max_wait_s, server_says),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            payload = retrying(self._post, texts)
        except httpx.HTTPStatusError as exc:
            body = exc.response.text.strip().replace("\n", " ")[:300]
            raise EmbeddingError(
                f"embedding server {self.spec.endpoint} answered {exc.response.status_code} "
                f"for model {self.spec.model!r}: {body or exc.response.reason_phrase}"
                + self._hint(exc.response.status_code)
            ) from exc
        except httpx.HTTPError as exc:
            raise EmbeddingError(
                f"embedding server {self.spec.endpoint} could not be reached after "
                f"{self.max_retries + 1} attempts ({type(exc).__name__}: {exc}); is it running?"
            ) from exc
        return self._vectors(payload, len(texts))

    def _post(self, texts: list[str]) -> Any:
        with self._lock:
            self.requests_sent += 1
        response = self._client.post(
            self.spec.endpoint,
            json={
                "model": self.spec.model,
                # OpenAI refuses an empty input; a space tokenises to the same nothing for BERT
                "input": [text if text else " " for text in texts],
                "encoding_format": "float",
            },
        )
        response.raise_for_status()
        try:
            return response.json()
        except ValueError as exc:
            raise EmbeddingError(
                f"embedding server {self.spec.endpoint} answered with no JSON: "
                f"{response.text[:200]!r}"
            ) from exc

    def _vectors(self, payload: Any, n: int) -> np.ndarray:
        """The payload's vectors in input order; EmbeddingError when it is not n vectors."""
        where = f"embedding server {self.spec.endpoint}"
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != n:
            got = f"{len(data)} embeddings" if isinstance(data, list) else repr(payload)[:200]
            raise EmbeddingError(f"{where} answered {got} for {n} inputs")
        try:
            ordered = sorted(data, key=lambda item: item.get("index", 0))
            rows = [_vector(item["embedding"]) for item in ordered]
            vectors = np.stack(rows)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"{where} answered malformed embeddings: {exc}") from exc
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise EmbeddingError(f"{where} answered non-finite or ragged embeddings")
        if self._dimension is None:
            self._dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self._dimension:
            raise EmbeddingError(
                f"{where} answered vectors of length {vectors.shape[1]}, "
                f"earlier ones of {self._dimension}"
            )
        return vectors

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "embedding server %s: attempt %d failed (%s); retrying",
            self.spec.endpoint,
            state.attempt_number,
            exc,
        )

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            return f" (set the server's API key in ${API_KEY_ENV})"
        if status == 404:
            return " (give the server's base URL, usually ending in /v1, and its model id)"
        if status == 413:
            return " (too many inputs per request: lower the embedder's batch_size)"
        return ""


def _vector(value: Any) -> np.ndarray:
    """One embedding: a list of floats, or base64 float32 (what some servers send anyway)."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)
