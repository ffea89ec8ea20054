"""A local model's answer to one LangChain call, as LangChain's ``ChatResult``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult

from uq_guard_hf.request_batching import RequestOutcome

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["chat_result"]


def chat_result(
    outcome: RequestOutcome,
    model_name: str,
    tokenizer: PreTrainedTokenizerBase | None,
    want_logprobs: bool,
) -> ChatResult:
    """The first answer of ``outcome`` with its token usage; with ``want_logprobs``, each
    token's log-probability and entropy in ``response_metadata["logprobs"]`` (decoded with
    ``tokenizer``)."""
    answer = outcome.answers[0]
    usage = UsageMetadata(
        input_tokens=outcome.prompt_tokens,
        output_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
    )
    response_metadata: dict[str, Any] = {
        "model_name": model_name,
        "finish_reason": answer.finish_reason,
    }
    if want_logprobs and answer.token_logprobs is not None:
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
            ChatGeneration(message=message, generation_info={"finish_reason": answer.finish_reason})
        ],
        llm_output={
            "model_name": model_name,
            "token_usage": {
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
            },
        },
    )
