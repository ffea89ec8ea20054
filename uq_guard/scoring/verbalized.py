"""Verbalized confidence (Xiong et al. 2023): ask the model how sure it is of its reply.

One extra call: the conversation, the model's reply as the assistant turn,
then :data:`VERBALIZED_PROMPT` as a new user turn. The answer is read by
:func:`parse_verbalized_confidence`, which accepts what models actually write
("85", "85%", "Confidence: 85/100", "0.85", "I'd say 90 out of 100") and
returns ``None`` for anything else ("eighty", "very sure", "150"), so that the
engine reports a note instead of a made-up number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from uq_guard.backend import Generation, GenerationRequest, Message

#: The question appended after the reply. Kept short so small models follow it.
VERBALIZED_PROMPT = (
    "How confident are you that your answer above is correct? "
    "Reply with only a number from 0 to 100."
)

#: The name of the score in ``UncertaintyReport.scores`` (a confidence in [0, 1]).
VERBALIZED_SCORE = "verbalized_confidence"

#: Enough for "Confidence: 85%" and a few words around it.
VERBALIZED_MAX_TOKENS = 16

# A mention of the scale itself ("0 to 100", "0-100", "on a scale of 1 to 10")
# is not the answer; it is removed before the first number is read.
_SCALE = re.compile(r"\b[01]\s*(?:-|–|to)\s*(?:10|100)\b", re.IGNORECASE)
_NUMBER = re.compile(
    r"(?<![\w.])(?P<value>\d+(?:\.\d+)?|\.\d+)\s*"
    r"(?:(?P<percent>%|percent\b)|(?:/|out\s+of\s+)(?P<scale>100|10|1)\b)?",
    re.IGNORECASE,
)


def verbalized_request(conversation: Sequence[Message], reply: str) -> GenerationRequest:
    """The request that asks the model for its confidence in ``reply``.

    The model's own sampling setting (``temperature=None``) answers it, like the reply.
    """
    messages = (
        *conversation,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": VERBALIZED_PROMPT},
    )
    return GenerationRequest(messages=messages, max_tokens=VERBALIZED_MAX_TOKENS)


def parse_verbalized_confidence(text: str) -> float | None:
    """Read a stated confidence as a number in [0, 1], or None when there is none.

    The rule: drop mentions of the scale ("0 to 100"), take the *first* number
    in the text, then

    * ``N/100``, ``N out of 100``, ``N%`` and a bare ``N`` in 0..100 mean N/100;
    * ``N/10`` (``N out of 10``) means N/10, and ``N/1`` means N;
    * a bare decimal below 1 written with a point (``0.85``, ``.9``) is read
      as a probability (models often answer that way); ``1.0`` is read as 1%.

    Anything else gives None: no digits at all ("eighty"), a number out of
    range ("150", "12/10"), or a negative number ("-5").

    Args:
        text: the model's answer to :data:`VERBALIZED_PROMPT`.

    Returns:
        The confidence in [0, 1], or None when the answer states none.
    """
    cleaned = _SCALE.sub(" ", text)
    match = _NUMBER.search(cleaned)
    if match is None:
        return None
    if match.start() > 0 and cleaned[match.start() - 1] == "-":
        return None
    raw = match.group("value")
    value = float(raw)
    scale = match.group("scale")
    if scale is not None:
        confidence = value / float(scale)
    elif match.group("percent") is None and "." in raw and value < 1.0:
        confidence = value
    else:
        confidence = value / 100.0
    if not 0.0 <= confidence <= 1.0:
        return None
    return confidence


def read_verbalized(answer: Generation) -> tuple[float | None, str | None]:
    """The confidence an answer to :func:`verbalized_request` states, or a note saying why none.

    Returns:
        ``(confidence, None)``, or ``(None, note)`` when the call failed or the
        answer holds no number from 0 to 100 (the note quotes it).
    """
    if not answer.ok:
        return None, f"verbalized confidence call failed: {answer.error or 'empty response'}"
    confidence = parse_verbalized_confidence(answer.texts[0])
    if confidence is None:
        return None, (
            f"verbalized confidence unreadable (no number from 0 to 100): {answer.texts[0][:80]!r}"
        )
    return confidence, None
