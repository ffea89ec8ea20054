"""OpenAI-style messages to the token ids of a chat-template prompt, checked on the way.

A local model reads text only, so a message is refused, with its position
and what is wrong, when it has an unknown role, no content, or a content part
that is not text (an image, a file). The engine's own reading of a content,
:func:`uq_guard._messages.content_text`, is deliberately not used here:

* it keeps the text parts of a multi-part content and silently drops the
  rest, which is right for finding the prompt to perturb, but a model that
  never saw the image must not answer a question about it;
* it joins text parts with a newline, where this module joins them with
  nothing (``["Describe", " briefly."]`` reads ``"Describe briefly."``).
  Moving the model to the newline is a change of what it is prompted with,
  so it is left to a change of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Message

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["SUPPORTED_ROLES", "encode_prompt", "normalise_conversation", "normalise_message"]

SUPPORTED_ROLES = ("system", "user", "assistant", "tool")


def normalise_message(message: Any, position: int) -> Message:
    """Check one OpenAI-style message and flatten its content to a string for the template.

    Raises:
        ConfigurationError: not a dict, an unknown role, no ``content``, or a
            content that is neither a string nor a list of text parts.
    """
    if not isinstance(message, Mapping):
        raise ConfigurationError(
            f"message {position} must be a dict with 'role' and 'content', "
            f"got {type(message).__name__}"
        )
    role = message.get("role")
    if role == "developer":
        role = "system"
    if role not in SUPPORTED_ROLES:
        raise ConfigurationError(
            f"message {position} has role {role!r}; allowed roles: {', '.join(SUPPORTED_ROLES)}"
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


def normalise_conversation(messages: Iterable[Any]) -> list[Message]:
    """Every message checked and flattened (:func:`normalise_message`); at least one."""
    conversation = [normalise_message(message, i) for i, message in enumerate(messages)]
    if not conversation:
        raise ConfigurationError("the conversation is empty: give at least one message")
    return conversation


def encode_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Iterable[Any],
    model_name: str,
) -> list[int]:
    """The token ids of ``messages`` through the chat template, ready for the model's answer.

    Raises:
        ConfigurationError: a malformed message, or a prompt longer than the
            model's context (``model_name`` names the model in the error).
    """
    conversation = normalise_conversation(messages)
    prompt_text = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False
    )
    # The template already writes every special token the model expects.
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    context_length = getattr(model.config, "max_position_embeddings", None)
    if context_length is not None and len(prompt_ids) >= context_length:
        raise ConfigurationError(
            f"the prompt is {len(prompt_ids)} tokens; {model_name} reads at most {context_length}"
        )
    return list(prompt_ids)
