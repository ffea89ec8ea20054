"""A round of uq_guard requests answered on a loaded model, in as few batched calls as it allows.

Requests that share their sampling settings (:class:`SamplingSettings`) run
as one left-padded ``generate`` (:func:`~uq_guard_hf.batched_generation.generate_batch`).
Nothing is raised for a request: a malformed one, or one whose group
failed, comes back with its error, and the others are answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Generation, GenerationRequest, Usage
from uq_guard_hf.batched_generation import Answer, SamplingSettings, generate_batch
from uq_guard_hf.chat_prompt import encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["GroupGenerator", "RequestOutcome", "answer_requests", "sampling_settings"]

logger = logging.getLogger(__name__)


class GroupGenerator(Protocol):
    """Answers one group of prompts that share their settings, as :func:`generate_batch` does."""

    def __call__(
        self,
        model: Any,
        tokenizer: Any,
        settings: SamplingSettings,
        prompts: list[list[int]],
        stop: Sequence[str] | None = None,
        *,
        seed: int | None = None,
    ) -> tuple[list[list[Answer]], list[int]]: ...


@dataclass
class RequestOutcome:
    """Everything one request produced, richer than a :class:`Generation`."""

    answers: list[Answer] = field(default_factory=list)
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


def sampling_settings(
    request: GenerationRequest, *, temperature: float | None, max_tokens: int
) -> SamplingSettings:
    """The batch group ``request`` falls in; ``temperature`` and ``max_tokens`` fill its gaps.

    Raises:
        ConfigurationError: ``n`` under 1, a negative temperature or
            ``max_tokens`` under 1.
    """
    if request.n < 1:
        raise ConfigurationError(f"n must be at least 1, got {request.n}")
    if request.temperature is not None:
        temperature = request.temperature
    if temperature is not None and temperature < 0:
        raise ConfigurationError(f"temperature must be >= 0, got {temperature}")
    max_new_tokens = request.max_tokens if request.max_tokens is not None else max_tokens
    if max_new_tokens < 1:
        raise ConfigurationError(f"max_tokens must be at least 1, got {max_new_tokens}")
    return SamplingSettings(
        temperature=temperature if temperature else None,
        max_new_tokens=max_new_tokens,
        n=request.n,
        want_logprobs=request.want_logprobs,
        seed_offset=request.seed_offset,
    )


def answer_requests(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[GenerationRequest],
    *,
    settings_for: Callable[[GenerationRequest], SamplingSettings],
    model_name: str,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    generate: GroupGenerator = generate_batch,
) -> list[RequestOutcome]:
    """Answer ``requests`` in one batched ``generate`` per group; never raises for a request.

    Args:
        model: the loaded model; the caller holds its lock.
        tokenizer: its tokenizer.
        requests: the round, answered in order.
        settings_for: the sampling settings of a request (:func:`sampling_settings`
            with the chat model's own defaults).
        model_name: names the model in a too-long-prompt error.
        seed: the chat model's seed (see :func:`generate_batch`).
        stop: stop strings for every request.
        generate: what answers one group: transformers' batched ``generate``
            (:func:`generate_batch`), or llama.cpp's
            (:func:`uq_guard_hf.llama_cpp_chat_model.generate_llama_cpp_batch`).

    Returns:
        One outcome per request, in order.
    """
    outcomes = [RequestOutcome() for _ in requests]
    groups: dict[SamplingSettings, list[tuple[int, list[int]]]] = {}
    for index, request in enumerate(requests):
        try:
            settings = settings_for(request)
            prompt_ids = encode_prompt(model, tokenizer, request.messages, model_name)
        except Exception as exc:
            outcomes[index].error = exc
            continue
        groups.setdefault(settings, []).append((index, prompt_ids))

    for settings, members in groups.items():
        try:
            answers_per_prompt, completion_tokens = generate(
                model,
                tokenizer,
                settings,
                [prompt_ids for _, prompt_ids in members],
                stop,
                seed=seed,
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
