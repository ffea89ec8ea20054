"""Many sampled sequences decoded together in one llama.cpp context.

:class:`LlamaCppDecoder` owns a llama.cpp model and context (through
``llama-cpp-python``'s C bindings) and answers "``n`` samples of each of these
prompts" the way one batched ``model.generate`` does for transformers: each
prompt is read once and its key/value cache shared by its ``n`` sequences;
then every live sequence advances by one token per ``llama_decode``. Sampling
is plain ancestral sampling at the given temperature (no top-k, top-p or
min-p, as :mod:`uq_guard_hf.batched_generation` does), done here on the raw
logits, which also give each chosen token's log-probability and each step's
entropy (before temperature, as :mod:`uq_guard_hf.logit_statistics`).

Token ids in, token ids out: prompts, chat templates and text are the
caller's (:mod:`uq_guard_hf.llama_cpp_chat_model`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from uq_guard._cpus import usable_cpus
from uq_guard._exceptions import ConfigurationError

__all__ = ["DecodedSequence", "LlamaCppDecoder"]

logger = logging.getLogger(__name__)

# Sequences decoded together at most; more are decoded in further passes.
_MAX_SEQUENCES = 64


@dataclass
class DecodedSequence:
    """One sampled continuation: its token ids, and their statistics when asked."""

    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] | None = None
    token_entropies: list[float] | None = None
    ended: bool = False


class LlamaCppDecoder:
    """A llama.cpp model and one context that decodes up to 64 sequences at a time.

    Not thread-safe: the caller serialises :meth:`decode` (the chat model's lock).

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: key/value cache cells shared by the sequences of one pass;
            ``None``: the model's training context.
        n_threads: CPU threads; ``None``: the CPUs this process may use.

    Raises:
        ImportError: ``llama-cpp-python`` is not installed.
        OSError: the model could not be loaded.
    """

    def __init__(
        self, model_path: str, *, n_ctx: int | None = None, n_threads: int | None = None
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        # llama.cpp reports every tensor it loads; only its errors are worth showing
        # (what ``Llama(verbose=False)`` does), unless the user chose otherwise.
        native_logger = logging.getLogger("llama-cpp-python")
        if native_logger.level == logging.NOTSET:
            native_logger.setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self._model = llama_cpp.llama_model_load_from_file(model_path.encode(), model_params)
        if not self._model:
            raise OSError(f"llama.cpp could not load {model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
        threads = n_threads or usable_cpus()  # llama.cpp's own default is a fixed 4
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx or self.n_ctx_train
        params.n_batch = min(2048, params.n_ctx)
        params.n_ubatch = min(512, params.n_batch)
        params.n_seq_max = _MAX_SEQUENCES
        params.n_threads = threads
        params.n_threads_batch = threads
        # One cache for all sequences, so a prompt's cells serve its n samples.
        params.kv_unified = True
        params.no_perf = True
        self._context = llama_cpp.llama_init_from_model(self._model, params)
        if not self._context:
            llama_cpp.llama_model_free(self._model)
            raise OSError(f"llama.cpp could not make a context for {model_path}")
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._context))
        self.n_batch = int(params.n_batch)
        self._memory = llama_cpp.llama_get_memory(self._context)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, _MAX_SEQUENCES)
        self.n_threads = threads

    def close(self) -> None:
        """Free the context and the model; the decoder is unusable afterwards."""
        lib = self._lib
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_context", None):
            lib.llama_free(self._context)
            self._context = None
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def is_end_of_generation(self, token_id: int) -> bool:
        """Whether the model ends its turn with ``token_id`` (``<|im_end|>``, EOS...)."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token_id))

    def decode(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float | None,
        max_tokens: int,
        want_statistics: bool,
        rng: np.random.Generator,
        stop_ids: frozenset[int] = frozenset(),
        should_stop: Callable[[list[int]], bool] | None = None,
    ) -> list[list[DecodedSequence]]:
        """``n`` continuations of every prompt; greedy when ``temperature`` is None or 0.

        A sequence ends at an end-of-generation token or one of ``stop_ids``
        (kept as its last token), when ``should_stop(token_ids)`` says so, or
        after ``max_tokens`` tokens.

        Raises:
            ConfigurationError: a prompt plus ``max_tokens`` exceeds the context.
        """
        for prompt in prompts:
            if not prompt or len(prompt) + max_tokens > self.n_ctx:
                raise ConfigurationError(
                    f"a prompt of {len(prompt)} tokens plus max_tokens={max_tokens} does not "
                    f"fit the llama.cpp context of {self.n_ctx} tokens"
                )
        results = [
            [
                DecodedSequence(
                    token_logprobs=[] if want_statistics else None,
                    token_entropies=[] if want_statistics else None,
                )
                for _ in range(n)
            ]
            for _ in prompts
        ]
        for unit in self._passes(prompts, n, max_tokens):
            self._decode_pass(
                [(index, sample, prompts[index]) for index, sample in unit],
                temperature=temperature,
                max_tokens=max_tokens,
                want_statistics=want_statistics,
                rng=rng,
                stop_ids=stop_ids,
                should_stop=should_stop,
                results=results,
            )
        return results

    def _passes(
        self, prompts: Sequence[Sequence[int]], n: int, max_tokens: int
    ) -> list[list[tuple[int, int]]]:
        """(prompt, sample) pairs packed into passes that fit the cache and the sequence cap."""
        passes: list[list[tuple[int, int]]] = []
        current: list[tuple[int, int]] = []
        cells, read = 0, set()
        for index, prompt in enumerate(prompts):
            for sample in range(n):
                extra = max_tokens + (0 if index in read else len(prompt))
                if current and (len(current) >= _MAX_SEQUENCES or cells + extra > self.n_ctx):
                    passes.append(current)
                    current, cells, read = [], 0, set()
                    extra = max_tokens + len(prompt)
                current.append((index, sample))
                cells += extra
                read.add(index)
        if current:
            passes.append(current)
        return passes

    def _decode_pass(
        self,
        members: list[tuple[int, int, Sequence[int]]],
        *,
        temperature: float | None,
        max_tokens: int,
        want_statistics: bool,
        rng: np.random.Generator,
        stop_ids: frozenset[int],
        should_stop: Callable[[list[int]], bool] | None,
        results: list[list[DecodedSequence]],
    ) -> None:
        lib = self._lib
        lib.llama_memory_clear(self._memory, True)
        # Each prompt is read once, its cells tagged with the ids of all its sequences.
        sequences_of: dict[int, list[int]] = {}
        for seq_id, (index, _, _) in enumerate(members):
            sequences_of.setdefault(index, []).append(seq_id)
        first_logits: dict[int, np.ndarray] = {}
        pending: list[tuple[int, int]] = []  # (prompt index, batch row of its last token)
        self._batch.n_tokens = 0
        for index, seq_ids in sequences_of.items():
            prompt = next(p for i, _, p in members if i == index)
            for position, token in enumerate(prompt):
                if self._batch.n_tokens == self.n_batch:
                    self._flush_prompts(pending, first_logits)
                    pending = []
                last = position == len(prompt) - 1
                self._add(token, position, seq_ids, last)
                if last:
                    pending.append((index, self._batch.n_tokens - 1))
        self._flush_prompts(pending, first_logits)

        # live: seq_id -> (prompt index, sample, next position); logits rows follow its order
        live = {
            seq_id: (index, sample, len(prompt))
            for seq_id, (index, sample, prompt) in enumerate(members)
        }
        logits = np.stack([first_logits[index] for index, _, _ in members])
        for step in range(max_tokens):
            seq_ids = list(live)
            chosen, logprobs, entropies = _choose(logits, temperature, want_statistics, rng)
            self._batch.n_tokens = 0
            still_live: dict[int, tuple[int, int, int]] = {}
            for row, seq_id in enumerate(seq_ids):
                index, sample, position = live[seq_id]
                token = int(chosen[row])
                result = results[index][sample]
                result.token_ids.append(token)
                if result.token_logprobs is not None and logprobs is not None:
                    result.token_logprobs.append(float(logprobs[row]))
                if result.token_entropies is not None and entropies is not None:
                    result.token_entropies.append(float(entropies[row]))
                if token in stop_ids or self.is_end_of_generation(token):
                    result.ended = True
                    continue
                if should_stop is not None and should_stop(result.token_ids):
                    result.ended = True
                    continue
                if step == max_tokens - 1:
                    continue
                self._add(token, position, [seq_id], True)
                still_live[seq_id] = (index, sample, position + 1)
            live = still_live
            if not live:
                break
            self._check(lib.llama_decode(self._context, self._batch))
            logits = np.ctypeslib.as_array(
                lib.llama_get_logits(self._context), shape=(len(live), self.n_vocab)
            ).copy()

    def _flush_prompts(
        self, pending: list[tuple[int, int]], first_logits: dict[int, np.ndarray]
    ) -> None:
        if not self._batch.n_tokens:
            return
        self._check(self._lib.llama_decode(self._context, self._batch))
        for index, row in pending:
            first_logits[index] = np.ctypeslib.as_array(
                self._lib.llama_get_logits_ith(self._context, row), shape=(self.n_vocab,)
            ).copy()
        self._batch.n_tokens = 0

    def _add(self, token: int, position: int, seq_ids: Sequence[int], wants_logits: bool) -> None:
        batch = self._batch
        row = batch.n_tokens
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = len(seq_ids)
        for slot, seq_id in enumerate(seq_ids):
            batch.seq_id[row][slot] = seq_id
        batch.logits[row] = wants_logits
        batch.n_tokens = row + 1

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")


def _choose(
    logits: np.ndarray,
    temperature: float | None,
    want_statistics: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The next token of every row, and the raw logits' log-probabilities and entropies."""
    logprobs_of_chosen = entropies = None
    if temperature:
        # float32 exponentials, float64 running sums: the exact distribution at
        # half the cost of float64 throughout (this runs once per decoded step).
        weights = logits * np.float32(1.0 / temperature)
        weights -= weights.max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        totals = weights.sum(axis=1, dtype=np.float64)
        draws = rng.random(len(logits)) * totals
        chosen = np.array(
            [
                np.searchsorted(np.cumsum(row, dtype=np.float64), draw, side="right")
                for row, draw in zip(weights, draws, strict=True)
            ]
        )
        chosen = np.minimum(chosen, logits.shape[1] - 1)
    else:
        chosen = logits.argmax(axis=1)
    if want_statistics:
        log_probs = _log_softmax(logits)
        logprobs_of_chosen = log_probs[np.arange(len(logits)), chosen]
        probs = np.exp(log_probs)
        entropies = np.clip(-(probs * np.where(probs > 0, log_probs, 0.0)).sum(axis=1), 0.0, None)
    return chosen, logprobs_of_chosen, entropies


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    values = logits.astype(np.float64)
    values -= values.max(axis=1, keepdims=True)
    return values - np.log(np.exp(values).sum(axis=1, keepdims=True))
