"""The local chat model on llama.cpp: :class:`LlamaCppChatModel`, and when it is picked.

On CPU, llama.cpp answers a guarded call's round of samples about twice as
fast as transformers' padded ``generate`` (measured in
``benchmarks/results/performance/local_generation.md``). :class:`LlamaCppChatModel`
is a :class:`~uq_guard_hf.HuggingFaceChatModel` in every way a user or the
engine can see (LangChain chat model, uq_guard Backend, ``guard_defaults``,
``model_copy``); only the forward passes move to llama.cpp
(:mod:`uq_guard_hf.llama_cpp_decoding`). The chat template, tokenizer and
decoded text stay transformers', so prompts are the same token ids and
answers the same text; the weights are the bundled GGUF dequantised to
float16 (or float32, ``dtype="float32"``;
:func:`~uq_guard_hf.provision.smollm2_dequantised_gguf_path`), so token
entropies match the ones the shipped calibration was fitted on (0.002 nats
apart in the mean, measured).

:func:`~uq_guard_hf.local_engine.pick_local_engine` is the rule
:meth:`HuggingFaceChatModel.default` follows: llama.cpp on CPU when
``llama-cpp-python`` is importable, transformers otherwise (CUDA, MPS,
bfloat16, or the package missing, which is logged, never an error).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard_hf.batched_generation import Answer, SamplingSettings, answer_from_tokens, cut_at_stop
from uq_guard_hf.chat_model import HuggingFaceChatModel
from uq_guard_hf.local_engine import (
    ENGINE_ENV,
    ENGINE_MODELS,
    LOCAL_ENGINES,
    llama_cpp_available,
    pick_local_engine,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from uq_guard_hf.llama_cpp_decoding import LlamaCppDecoder

__all__ = [
    "ENGINE_ENV",
    "LOCAL_ENGINES",
    "LlamaCppChatModel",
    "generate_llama_cpp_batch",
    "llama_cpp_available",
    "pick_local_engine",
]

logger = logging.getLogger(__name__)


def load_llama_cpp(
    tokenizer_source: str, gguf_path: str, n_threads: int | None
) -> tuple[LlamaCppDecoder, PreTrainedTokenizerBase]:
    """The llama.cpp decoder of ``gguf_path``, the tokenizer of ``tokenizer_source``.

    Raises:
        MissingDependencyError: llama-cpp-python or transformers is not installed.
        ConfigurationError: the tokenizer has no chat template.
    """
    try:
        from transformers import AutoTokenizer

        from uq_guard_hf.llama_cpp_decoding import LlamaCppDecoder
    except ImportError as exc:
        raise MissingDependencyError("the llama.cpp engine", "llama") from exc
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigurationError(f"{tokenizer_source} has no chat template")
    decoder = LlamaCppDecoder(gguf_path, n_threads=n_threads)
    # chat_prompt.encode_prompt reads the context length from here.
    decoder.config = SimpleNamespace(max_position_embeddings=decoder.n_ctx)  # type: ignore[attr-defined]
    logger.info(
        "loaded %s on llama.cpp (%d threads, %d-token context)",
        Path(gguf_path).name,
        decoder.n_threads,
        decoder.n_ctx,
    )
    return decoder, tokenizer


def generate_llama_cpp_batch(
    decoder: LlamaCppDecoder,
    tokenizer: PreTrainedTokenizerBase,
    settings: SamplingSettings,
    prompts: list[list[int]],
    stop: Sequence[str] | None = None,
    *,
    seed: int | None = None,
) -> tuple[list[list[Answer]], list[int]]:
    """:func:`~uq_guard_hf.batched_generation.generate_batch`, on llama.cpp.

    Same answers in the same shape: text decoded by the tokenizer, cut at the
    first end token or stop string, statistics from the raw logits when
    ``settings.want_logprobs``, greedy decoding done once and copied ``n``
    times, the end token counted as spent. Sampling draws from numpy,
    seeded with ``seed + settings.seed_offset`` when ``seed`` is set.
    """
    import numpy as np

    stop_ids = frozenset(
        token_id
        for token_id in (tokenizer.eos_token_id, tokenizer.pad_token_id)
        if isinstance(token_id, int)
    )
    sequences_per_prompt = settings.n if settings.do_sample else 1
    rng = np.random.default_rng(None if seed is None else seed + settings.seed_offset)

    def reached_stop(token_ids: list[int]) -> bool:
        return cut_at_stop(tokenizer.decode(token_ids, skip_special_tokens=True), stop)[1]

    decoded = decoder.decode(
        prompts,
        n=sequences_per_prompt,
        temperature=settings.temperature,
        max_tokens=settings.max_new_tokens,
        want_statistics=settings.want_logprobs,
        rng=rng,
        stop_ids=stop_ids,
        should_stop=reached_stop if stop else None,
    )
    answers_per_prompt: list[list[Answer]] = []
    completion_tokens: list[int] = []
    for sequences in decoded:
        answers: list[Answer] = []
        spent = 0
        for sequence in sequences:
            token_ids = sequence.token_ids
            end = next(
                (
                    position
                    for position, token in enumerate(token_ids)
                    if token in stop_ids or decoder.is_end_of_generation(token)
                ),
                len(token_ids),
            )
            answer, used = answer_from_tokens(
                tokenizer, token_ids, end, stop, sequence.token_logprobs, sequence.token_entropies
            )
            answers.append(answer)
            spent += used
        if sequences_per_prompt < settings.n:
            answers = [copy.deepcopy(answers[0]) for _ in range(settings.n)]
        answers_per_prompt.append(answers)
        completion_tokens.append(spent)
    return answers_per_prompt, completion_tokens


class LlamaCppChatModel(HuggingFaceChatModel):
    """A :class:`HuggingFaceChatModel` whose forward passes run on llama.cpp, on the CPU.

    Everything else is the parent's: the fields, LangChain calls, the uq_guard
    Backend (one round of requests grouped by sampling settings, each group
    decoded together), ``guard_defaults``. Build it with :meth:`default`
    (what ``HuggingFaceChatModel.default()`` returns on CPU when
    ``llama-cpp-python`` is installed) or :meth:`from_gguf`.

    Attributes:
        model_name: the folder the tokenizer and chat template load from.
        gguf_path: the ``.gguf`` weights llama.cpp runs (dequantised, to
            match transformers' numbers).
        dtype: the weights' type in ``gguf_path`` (``default()`` picks the
            file by it: float16 unless asked for float32).
        n_threads: CPU threads; ``None``: the CPUs this process may use.
    """

    gguf_path: str
    n_threads: int | None = None

    @field_validator("device")
    @classmethod
    def _check_cpu(cls, value: str) -> str:
        if value != "cpu":
            raise ValueError(f"the llama.cpp engine runs on the CPU, got device={value!r}")
        return value

    @classmethod
    def from_gguf(
        cls,
        gguf_path: str | Path,
        *,
        tokenizer: str | Path,
        n_threads: int | None = None,
        max_new_tokens: int = 256,
        **fields: Any,
    ) -> LlamaCppChatModel:
        """Load ``gguf_path`` on llama.cpp, with the tokenizer and chat template of ``tokenizer``.

        Args:
            gguf_path: the weights.
            tokenizer: a folder (or hub name) with the model's transformers
                tokenizer and chat template.
            n_threads: CPU threads; ``None``: the CPUs this process may use.
            max_new_tokens: cap on generated tokens (the ``max_tokens`` field).
            **fields: other fields, e.g. ``temperature``, ``seed``, ``guard_defaults``.

        Raises:
            MissingDependencyError: llama-cpp-python or transformers is not installed.
            OSError: the weights or tokenizer could not be loaded.
        """
        fields.setdefault("device", "cpu")
        chat_model = cls(
            model_name=str(tokenizer),
            gguf_path=str(gguf_path),
            n_threads=n_threads,
            max_tokens=max_new_tokens,
            **fields,
        )
        with chat_model._runtime.lock:
            chat_model._load_locked()
        return chat_model

    @classmethod
    def default(cls, **kwargs: Any) -> LlamaCppChatModel:
        """SmolLM2-135M-Instruct on llama.cpp, provisioned on first use, with its calibration.

        Args:
            **kwargs: passed to :meth:`from_gguf` (``n_threads``,
                ``max_new_tokens``, ``temperature``, ``guard_defaults``...);
                ``dtype`` picks the weights: float16 (unset) or float32.
                ``engine`` is accepted and ignored.
        """
        from uq_guard_hf.provision import default_model_path, smollm2_dequantised_gguf_path
        from uq_guard_hf.shipped_calibration import shipped_guard_defaults

        kwargs.pop("engine", None)
        dtype = kwargs.pop("dtype", None) or "float16"
        kwargs.setdefault("guard_defaults", shipped_guard_defaults())
        return cls.from_gguf(
            smollm2_dequantised_gguf_path(str(dtype).removeprefix("torch.")),
            tokenizer=default_model_path(),
            dtype=dtype,
            **kwargs,
        )

    def _load_locked(self) -> tuple[Any, PreTrainedTokenizerBase]:
        """The llama.cpp decoder and the tokenizer, loaded unless they are; the caller
        holds the runtime lock."""
        return self._runtime.load_locked(
            (self.model_name, self.gguf_path, self.n_threads),
            lambda: load_llama_cpp(self.model_name, self.gguf_path, self.n_threads),
        )

    _generate_group = staticmethod(generate_llama_cpp_batch)

    @property
    def _weights_name(self) -> str:
        return self.gguf_path

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            **super()._identifying_params,
            "gguf_path": self.gguf_path,
            "n_threads": self.n_threads,
        }


ENGINE_MODELS["llama_cpp"] = LlamaCppChatModel
