"""OpenAI-style chat messages: finding and replacing the user's prompt.

The engine perturbs only the text of the *last user message*; the rest of
the conversation travels unchanged with every perturbation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Message


def normalize_messages(messages: str | Sequence[Message]) -> tuple[Message, ...]:
    """A tuple of message dicts; a bare string becomes one user message.

    Raises:
        ConfigurationError: empty input, a message that is not a dict with a
            role, or no user message to guard.
    """
    if isinstance(messages, str):
        return ({"role": "user", "content": messages},)
    result = tuple(messages)
    if not result:
        raise ConfigurationError("messages is empty: give at least one user message")
    for index, message in enumerate(result):
        if not isinstance(message, dict) or "role" not in message:
            raise ConfigurationError(
                f"messages[{index}] must be a dict with 'role' and 'content', got {message!r}"
            )
    last_user_index(result)
    return result


def last_user_index(messages: Sequence[Message]) -> int:
    """Index of the last user message (the prompt that is guarded)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") in ("user", "human"):
            return index
    raise ConfigurationError("messages has no user message: there is no prompt to guard")


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") if isinstance(part, dict) else str(part)
            for part in content
            if not isinstance(part, dict) or part.get("type", "text") == "text"
        )
    return str(content)


def user_prompt(messages: Sequence[Message]) -> str:
    """The text of the last user message (x_0)."""
    return content_text(messages[last_user_index(messages)].get("content"))


def with_user_prompt(messages: Sequence[Message], text: str) -> tuple[Message, ...]:
    """The conversation with the last user message's text replaced by ``text``.

    Non-text parts of a multi-part content (images, files) are kept.
    """
    index = last_user_index(messages)
    original = messages[index]
    content = original.get("content")
    if isinstance(content, list):
        others = [p for p in content if isinstance(p, dict) and p.get("type", "text") != "text"]
        new_content: Any = [{"type": "text", "text": text}, *others]
    else:
        new_content = text
    replaced = {**original, "content": new_content}
    return (*messages[:index], replaced, *messages[index + 1 :])
