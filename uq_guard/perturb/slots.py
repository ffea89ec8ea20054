"""GAAP's view of a prompt: word, gap and protected slots (ALGORITHMS.md §3, step 1).

:func:`segment` cuts the prompt into words, gaps and *protected* spans
(:func:`protected_spans`: numbers, quoted text, code, names and the spans the
caller marks), which no operator ever touches; :func:`render` writes an
individual (one value per word slot) back as prompt text. Capitalised words
are names, except a sentence's first word when it is a stopword or a common
instruction verb ("What", "Name", "List", ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from uq_guard.perturb.words import SENTENCE_STARTERS, STOPWORDS

__all__ = ["Slot", "protected_spans", "render", "segment", "words_of"]

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_PROTECTED_PATTERNS = (
    re.compile(r"```.*?(?:```|$)", re.DOTALL),  # fenced code (an unclosed fence runs to the end)
    re.compile(r"`[^`\n]+`"),  # inline code
    re.compile(r'"[^"\n]+"|“[^”\n]+”|‘[^’\n]+’|«[^»\n]+»|„[^“”\n]+[“”]'),  # quotations
    re.compile(r"(?<!\w)'[^'\n]+'(?!\w)"),
    # code-like or link-like chunks: identifiers, calls, paths, URLs, e-mail addresses
    re.compile(r"\S*(?:[_{}\[\]()<>=;\\/#@$^~|]|\w\.\w|::)\S*"),
    re.compile(r"[\w'’-]*\d[\w.,:/%'’-]*"),  # numbers and words holding digits (COVID-19, 3rd)
)


@dataclass(frozen=True)
class Slot:
    """One piece of a segmented prompt.

    Attributes:
        text: the piece as it appears in the prompt.
        kind: ``"word"`` (GAAP may change it), ``"gap"`` (spaces and
            punctuation) or ``"protected"`` (never changed).
        index: for a word, its position among the word slots; else -1.
        candidate: whether the word may become a key token (not a stopword).
    """

    text: str
    kind: Literal["word", "gap", "protected"]
    index: int = -1
    candidate: bool = False


def _name_spans(text: str) -> list[tuple[int, int]]:
    """Capitalised words that read as names (see the module docstring)."""
    spans = []
    for match in _WORD.finditer(text):
        word = match.group()
        if not word[:1].isupper():
            continue
        before = text[: match.start()].rstrip(" \t\"'“‘([")
        sentence_start = not before or before[-1] in ".!?:\n"
        lowered = word.lower()
        if (
            sentence_start
            and not word.isupper()
            and (lowered in STOPWORDS or lowered in SENTENCE_STARTERS)
        ):
            continue
        if spans and not text[spans[-1][1] : match.start()].strip(" \t"):
            spans[-1] = (spans[-1][0], match.end())  # "Barack Obama" is one name
        else:
            spans.append((match.start(), match.end()))
    return spans


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def protected_spans(text: str, protected: Sequence[str] = ()) -> list[tuple[int, int]]:
    """Character spans of ``text`` that no GAAP operator may change, merged and sorted.

    Protected are: fenced and inline code, quoted text, code- or link-like
    chunks (anything holding ``_ ( ) = / @ ::`` and the like), numbers and
    words holding digits, names (capitalised words, see the module
    docstring), and every occurrence (case-insensitive) of the strings in
    ``protected``. A span that cuts a word is widened to the whole word.
    """
    spans: list[tuple[int, int]] = []
    for pattern in _PROTECTED_PATTERNS:
        spans.extend(m.span() for m in pattern.finditer(text))
    spans.extend(_name_spans(text))
    for phrase in protected:
        if phrase.strip():
            spans.extend(m.span() for m in re.finditer(re.escape(phrase), text, re.IGNORECASE))
    widened = []
    for start, end in spans:
        while start > 0 and text[start - 1].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum():
            end += 1
        if end > start:
            widened.append((start, end))
    return _merge(widened)


def segment(
    text: str, protected: Sequence[str] = (), *, fixed_words: Iterable[str] = ()
) -> list[Slot]:
    """Cut ``text`` into word, gap and protected slots; joining their texts gives ``text`` back.

    Words in ``fixed_words`` (lower case, e.g. :data:`ANSWER_WORDS`) and
    stopwords are word slots that never become key tokens, so no operator
    touches them.
    """
    never_keys = STOPWORDS | frozenset(fixed_words)
    slots: list[Slot] = []
    n_words = 0

    def free(piece: str) -> None:
        nonlocal n_words
        cursor = 0
        for match in _WORD.finditer(piece):
            if match.start() > cursor:
                slots.append(Slot(piece[cursor : match.start()], "gap"))
            word = match.group()
            slots.append(Slot(word, "word", n_words, word.lower() not in never_keys))
            n_words += 1
            cursor = match.end()
        if cursor < len(piece):
            slots.append(Slot(piece[cursor:], "gap"))

    cursor = 0
    for start, end in protected_spans(text, protected):
        free(text[cursor:start])
        slots.append(Slot(text[start:end], "protected"))
        cursor = end
    free(text[cursor:])
    return slots


def words_of(slots: Sequence[Slot]) -> tuple[str, ...]:
    """The original words: the individual that is x_0 itself."""
    return tuple(slot.text for slot in slots if slot.kind == "word")


def render(slots: Sequence[Slot], individual: Sequence[str]) -> str:
    """The prompt text of ``individual`` (one value per word slot; ``""`` = deleted).

    A deleted word takes one neighbouring space with it, and no space is left
    before the punctuation that followed it.
    """
    pieces: list[str] = []
    after_deletion = False
    for slot in slots:
        if slot.kind == "word":
            value = individual[slot.index]
            if not value:
                after_deletion = True
                continue
            pieces.append(value)
        elif slot.kind == "gap" and after_deletion:
            if slot.text.strip():
                if pieces and not slot.text[0].isspace():
                    pieces[-1] = pieces[-1].rstrip(" \t")
                pieces.append(slot.text)
            elif not pieces:
                pass  # a deletion at the very start: drop the space after it
            else:
                continue
        else:
            pieces.append(slot.text)
        after_deletion = False
    return "".join(pieces).strip()
