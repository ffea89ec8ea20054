"""An int8 ONNX Runtime copy of a sentence-transformers model, for cheaper CPU embeddings.

``embedding_backend="onnx-int8"``: the model's transformer is exported to ONNX
once, its weights quantised to int8 (dynamic quantisation: MatMul weights per
channel, the embedding table too; activations stay float), and the result kept
in ``<cache_root>/onnx/<model>-<digest>/`` with its tokenizer. Later processes
load that folder with ONNX Runtime and ``tokenizers`` only: no torch at run time.

Dynamic quantisation scales activations per batch, so in a batch a text's int8
embedding would move slightly (1 - cosine ~1e-2) with the texts beside it. Each
text therefore runs on its own: its embedding depends on the text alone (cached
and concurrent calls agree), at the same cost as sorted batches here (61 texts
of up to 64 word pieces: 0.27-0.32 s one by one, 0.27-0.31 s in batches of 64).
The texts of one ``encode`` run on several threads at once (an ONNX Runtime
session serves concurrent runs; each run keeps to one thread), so a call's
texts take half the time on 2 free cores for the same CPU and bit-identical
rows. How many: ``$UQ_GUARD_EMBEDDING_THREADS`` (:data:`THREADS_ENV`), else the
CPUs this process may use, at most 8; ``uq-guard serve --workers N`` sets it
to the CPUs over N.

Exporting needs torch, ``onnx`` and ``onnxruntime`` (dependencies of uq_guard);

mean pooling and normalisation are done here in numpy, so only models made of
a Transformer, a mean Pooling and optionally a Normalize module are supported.
sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, which
pins transformers below 4.58 and so cannot live beside sentence-transformers
5 or later; this module does the same with ONNX Runtime's own quantiser.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from uq_guard._cpus import usable_cpus
from uq_guard._exceptions import ConfigurationError
from uq_guard._paths import cache_root

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_INSTALL_HINT",
    "THREADS_ENV",
    "OnnxInt8Encoder",
    "backend_installed",
    "default_threads",
    "export_folder",
    "missing_onnx_packages",
]

#: Bump when the export or quantisation recipe changes: older exports are then redone.
_RECIPE = "onnx-int8-v1:opset17:per-channel:MatMul,Gather"
_MODEL_FILE = "model_int8.onnx"
_META_FILE = "uq_guard_onnx.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_INSTALL_HINT = "pip install onnxruntime onnx (dependencies of uq-guard)"
THREADS_ENV = "UQ_GUARD_EMBEDDING_THREADS"
"""Environment variable: how many texts the int8 ONNX embedder runs at once."""
_MAX_DEFAULT_THREADS = 8
_export_lock = threading.Lock()


def default_threads(environ: Mapping[str, str] | None = None) -> int:
    """How many texts an encoder runs at once: ``$UQ_GUARD_EMBEDDING_THREADS`` (read from
    ``environ``, default ``os.environ``), else the usable CPUs (at most 8).

    Raises:
        ConfigurationError: the variable is set to something other than a positive int.
    """
    value = (os.environ if environ is None else environ).get(THREADS_ENV, "").strip()
    if not value:
        return min(usable_cpus(), _MAX_DEFAULT_THREADS)
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigurationError(f"{THREADS_ENV}={value!r}: give a positive whole number")
    return threads


def missing_onnx_packages() -> list[str]:
    """The packages ``embedding_backend="onnx-int8"`` needs that are not installed."""
    return [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]


def backend_installed(backend: str) -> str:
    """``backend`` when what it needs is installed (a pydantic validator of the setting).

    Raises:
        ValueError: ``"onnx-int8"`` without onnxruntime or onnx, naming what to install.
    """
    missing = missing_onnx_packages() if backend == "onnx-int8" else []
    if missing:
        raise ValueError(f"needs {' and '.join(missing)}: {ONNX_INSTALL_HINT}")
    return backend


def export_folder(location: str) -> Path:
    """Where the int8 export of the model at ``location`` (a folder or a hub name) is kept.

    The digest covers the recipe and, for a local folder, its files' sizes and
    modification times, so a changed model gets a fresh export.
    """
    digest = hashlib.sha256(_RECIPE.encode())
    path = Path(location)
    if path.is_dir():
        digest.update(str(path.resolve()).encode())
        for item in sorted(path.iterdir()):
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        digest.update(location.encode())
    name = path.name if path.is_dir() else location.replace("/", "--")
    return cache_root() / "onnx" / f"{name}-{digest.hexdigest()[:12]}"


def _transformer_of(model: Any) -> Any:
    """The Hugging Face model inside the sentence-transformers ``model``.

    Raises:
        ConfigurationError: a pipeline other than Transformer, mean Pooling[, Normalize].
    """
    names = [type(module).__name__ for module in model]
    pooling = model[1].get_config_dict() if len(names) > 1 else {}
    mean = pooling.get("pooling_mode") == "mean" or (
        pooling.get("pooling_mode_mean_tokens")
        and not any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and "mean" not in k
        )
    )
    if names[:2] != ["Transformer", "Pooling"] or not mean or names[2:] not in ([], ["Normalize"]):
        raise ConfigurationError(
            "embedding_backend='onnx-int8' supports sentence-transformers models made of a "
            f"Transformer, a mean Pooling and optionally a Normalize module; this one is {names} "
            f"with pooling {pooling}: use embedding_backend='torch'"
        )
    first = model[0]
    return getattr(first, "auto_model", None) or first.model


def _export(location: str, folder: Path) -> None:
    """Export, quantise and save the model at ``location`` into ``folder`` (atomically)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu")
    transformer = _transformer_of(model)
    tokenizer = model.tokenizer
    sample = tokenizer(
        ["a short text", "a somewhat longer text here"], padding=True, return_tensors="pt"
    )
    inputs = [name for name in _INPUTS if name in sample]

    class _LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        fp32 = scratch / "model_fp32.onnx"
        extra = (
            {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        )
        axes = {name: {0: "batch", 1: "tokens"} for name in [*inputs, "last_hidden_state"]}
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter's deprecation and tracer notes: expected, checked by tests
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LastHiddenState(transformer).eval(),
                tuple(sample[name] for name in inputs),
                str(fp32),
                input_names=inputs,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                **extra,
            )
        quantize_dynamic(
            str(fp32),
            str(scratch / _MODEL_FILE),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gather"],
            extra_options={"MatMulConstBOnly": True},
        )
        fp32.unlink()
        tokenizer.save_pretrained(str(scratch))
        first = model[0]
        meta = {
            "recipe": _RECIPE,
            "source": location,
            "inputs": inputs,
            "max_seq_length": int(model.max_seq_length or 512),
            "do_lower_case": bool(getattr(first, "do_lower_case", False)),
            "pad_id": int(tokenizer.pad_token_id or 0),
            "pad_token": str(tokenizer.pad_token or "[PAD]"),
            "dimension": int(
                (
                    getattr(model, "get_embedding_dimension", None)
                    or model.get_sentence_embedding_dimension
                )()
            ),
        }
        (scratch / _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.rename(scratch, folder)
        except OSError:  # another process finished first: keep its export
            if not (folder / _MODEL_FILE).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OnnxInt8Encoder:
    """The int8 ONNX export of a sentence-transformers model, with ``encode`` as the model has.

    Args:
        location: the model's folder or hub name (as ``SentenceTransformer`` takes it).
        max_tokens: word pieces read of each text; None = the model's own limit.
        threads: how many texts run at once, each on a thread of its own
            (same rows, less wall time); None: :func:`default_threads`. Each
            run keeps to one ONNX Runtime thread that never spins: a text is
            too small to split across cores (2 busy cores, 60 texts of 64
            pieces: 0.43 CPU-s on one thread without spinning, 0.58-0.96 at
            ORT's default of one spinning thread a core).

    Raises:
        ConfigurationError: onnxruntime or onnx is missing, the model is not
            supported (see the module docstring), or ``threads`` (or
            ``$UQ_GUARD_EMBEDDING_THREADS``) is not a positive whole number.
    """

    def __init__(
        self, location: str, *, max_tokens: int | None = None, threads: int | None = None
    ) -> None:
        missing = missing_onnx_packages()
        if missing:
            raise ConfigurationError(
                f"embedding_backend='onnx-int8' needs {' and '.join(missing)}: {ONNX_INSTALL_HINT}"
            )
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ConfigurationError(f"threads={threads!r}: give a positive int or None")
        self.threads = default_threads() if threads is None else threads
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = export_folder(location)
        with _export_lock:
            if not (self.folder / _MODEL_FILE).exists():
                logger.info("exporting %s to int8 ONNX in %s (once)", location, self.folder)
                _export(location, self.folder)
        meta = json.loads((self.folder / _META_FILE).read_text(encoding="utf-8"))
        self.inputs: list[str] = list(meta["inputs"])
        self.lowercase = bool(meta["do_lower_case"])
        self.dimension = int(meta["dimension"])
        limit = int(meta["max_seq_length"])
        self.max_seq_length = min(limit, max_tokens) if max_tokens else limit
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()  # each text runs alone: the mean is over its own pieces
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.folder / _MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def get_sentence_embedding_dimension(self) -> int:
        """The length of each embedding."""
        return self.dimension

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int = 64,
        normalize_embeddings: bool = True,
        **_: Any,
    ) -> np.ndarray:
        """Mean-pooled embeddings of ``sentences`` (float32 rows, in order).

        Each text runs on its own (see the module docstring), so its row does
        not depend on the others. ``batch_size`` and the other keywords of
        ``SentenceTransformer.encode`` are accepted and ignored.
        """
        texts = [t.lower() if self.lowercase else t for t in sentences]
        encodings = self.tokenizer.encode_batch(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        pool = self._threads() if len(encodings) > 1 else None
        if pool is not None:
            rows = pool.map(self._mean_hidden_state, encodings)
        else:
            rows = map(self._mean_hidden_state, encodings)
        for row, vector in enumerate(rows):
            out[row] = vector
        if normalize_embeddings and len(out):
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def _threads(self) -> ThreadPoolExecutor | None:
        """This process's threads for the texts (None for one thread).

        Made on first use, and again in a forked child (the parent's threads
        are not in it: a pool inherited across ``fork`` would never run a text).
        """
        if self.threads == 1:
            return None
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="uq_guard-onnx")
                self._pool_pid = os.getpid()
            return self._pool

    def _mean_hidden_state(self, encoding: Any) -> np.ndarray:
        """One tokenised text through the model, its last hidden state averaged over its pieces."""
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        hidden = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
        return hidden[0].mean(axis=0)
