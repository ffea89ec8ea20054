"""What a lexicon is: the :class:`Lexicon` protocol and the :class:`Substitutions` it returns.

Substitutes never include the word itself (case-insensitively) and never the
empty string: deletion is GAAP's own operator, not a lexicon entry
(:func:`clean_options`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from uq_guard.backend import Usage

__all__ = ["Lexicon", "Substitutions", "clean_options"]


@dataclass
class Substitutions:
    """Substitutes found for some key tokens.

    Attributes:
        options: key token -> its substitutes (best first; may be empty).
        lexicon: the name of the lexicon that found them.
        pos: the part of speech the substitutes keep, where the lexicon knows it
            (WordNet letters: ``n``, ``v``, ``a``, ``r``).
        usage: model calls spent (zero for WordNet and user dicts).
        notes: information for the report that loses nothing.
        degraded_reasons: what lost information (a failed model call).
    """

    options: dict[str, list[str]]
    lexicon: str
    pos: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    notes: list[str] = field(default_factory=list)
    degraded_reasons: list[str] = field(default_factory=list)


@runtime_checkable
class Lexicon(Protocol):
    """Anything that proposes substitutes for words of a prompt."""

    name: str

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        """Substitutes for each of ``words``, as they occur in the prompt ``context``."""
        ...


def clean_options(word: str, options: Sequence[str], limit: int | None = None) -> list[str]:
    """Distinct, non-empty options, ``word`` itself dropped, at most ``limit``."""
    seen = {word.casefold()}
    kept: list[str] = []
    for option in options:
        text = re.sub(r"\s+", " ", option.replace("_", " ")).strip()
        if not text or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        kept.append(text)
        if limit is not None and len(kept) >= limit:
            break
    return kept
