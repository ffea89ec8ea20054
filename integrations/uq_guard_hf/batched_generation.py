"""One left-padded, batched ``model.generate`` over prompts that share their sampling settings.

A pure function of a loaded model and its tokenizer: prompt token ids in,
per prompt ``n`` decoded answers out, each with the token ids it was decoded
from, its per-token log-probabilities and entropies (from the raw logits,
:mod:`uq_guard_hf.logit_statistics`) when asked, and why it ended. Loading,
locking and grouping requests are the caller's (:mod:`uq_guard_hf.loading`,
:mod:`uq_guard_hf.request_batching`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uq_guard_hf.logit_statistics import raw_logit_statistics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "Answer",
    "SamplingSettings",
    "cut_at_stop",
    "generate_batch",
    "stop_token_ids",
    "tokens_covering",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
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
class Answer:
    """One decoded answer, with the token ids it was decoded from."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float] | None
    token_entropies: list[float] | None
    finish_reason: str


def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: SamplingSettings,
    prompts: list[list[int]],
    stop: Sequence[str] | None = None,
    *,
    seed: int | None = None,
) -> tuple[list[list[Answer]], list[int]]:
    """Run one left-padded batched ``generate``; return answers and tokens spent per prompt.

    Args:
        model: the loaded causal LM.
        tokenizer: its tokenizer, padding on the left.
        settings: the sampling settings every prompt shares.
        prompts: the prompts' token ids (:func:`uq_guard_hf.chat_prompt.encode_prompt`).
        stop: strings that end an answer early; the answer is cut before them.
        seed: when set, sampling is seeded with ``seed + settings.seed_offset``.

    Returns:
        Per prompt, ``settings.n`` answers, and the completion tokens spent
        on them (an end-of-sequence token counts: it was computed).
    """
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id
    stop_ids = stop_token_ids(model, tokenizer)
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
        if settings.do_sample and seed is not None:
            torch.manual_seed(seed + settings.seed_offset)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            generation_config=GenerationConfig(**config_options),
            **generate_options,
        )
        generated = output.sequences[:, padded_length:]
        chosen_logprobs, entropies = (
            raw_logit_statistics(output.logits, generated)
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

    answers_per_prompt: list[list[Answer]] = []
    completion_tokens: list[int] = []
    for prompt_index in range(len(prompts)):
        answers: list[Answer] = []
        spent = 0
        for sample in range(sequences_per_prompt):
            row = prompt_index * sequences_per_prompt + sample
            token_ids = generated_rows[row]
            end = next(
                (position for position, token in enumerate(token_ids) if token in stop_ids),
                len(token_ids),
            )
            answer, used = answer_from_tokens(
                tokenizer,
                token_ids,
                end,
                stop,
                chosen_logprobs[row] if chosen_logprobs is not None else None,
                entropies[row] if entropies is not None else None,
            )
            answers.append(answer)
            spent += used
        if sequences_per_prompt < settings.n:
            answers = [copy.deepcopy(answers[0]) for _ in range(settings.n)]
        answers_per_prompt.append(answers)
        completion_tokens.append(spent)
    return answers_per_prompt, completion_tokens


def answer_from_tokens(
    tokenizer: PreTrainedTokenizerBase,
    token_ids: list[int],
    end: int,
    stop: Sequence[str] | None,
    logprobs: list[float] | None,
    entropies: list[float] | None,
) -> tuple[Answer, int]:
    """One decoded answer: ``token_ids`` up to ``end`` (its first stop token, or all of
    them), cut at the first ``stop`` string; and the tokens it spent (a stop token
    was computed too, so it counts)."""
    finished = end < len(token_ids)
    kept_ids = token_ids[:end]
    text = tokenizer.decode(kept_ids, skip_special_tokens=True).strip()
    text, stopped = cut_at_stop(text, stop)
    if stopped:
        kept_ids = tokens_covering(tokenizer, kept_ids, len(text))
    answer = Answer(
        text=text,
        token_ids=kept_ids,
        token_logprobs=logprobs[: len(kept_ids)] if logprobs is not None else None,
        token_entropies=entropies[: len(kept_ids)] if entropies is not None else None,
        finish_reason="stop" if finished or stopped else "length",
    )
    return answer, end + (1 if finished else 0)


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends an answer: the model's and tokenizer's end and pad tokens."""
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


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; say whether one was found."""
    if not stop:
        return text, False
    positions = [text.find(marker) for marker in stop if marker]
    positions = [position for position in positions if position >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


def tokens_covering(
    tokenizer: PreTrainedTokenizerBase, token_ids: list[int], text_length: int
) -> list[int]:
    """The shortest prefix of ``token_ids`` whose decoded text reaches ``text_length``."""
    for count in range(len(token_ids) + 1):
        decoded = tokenizer.decode(token_ids[:count], skip_special_tokens=True).lstrip()
        if len(decoded) >= text_length:
            return token_ids[:count]
    return token_ids
