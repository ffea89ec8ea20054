"""Is a free-text answer right? SQuAD-style rules, an optional judge, and a record of which decided.

Rules, in order (ALGORITHMS.md §5):

1. ``exact_match``: the normalised answer equals a normalised gold answer.
2. ``containment``: a normalised gold answer occurs in the normalised
   answer as a whole run of words (so gold ``"1972"`` is found in
   ``"in december 1972"``, while gold ``"9"`` is not found in ``"1990"``),
   under the guards below.
3. ``judge``: when no rule matched and a judge was given, the judge decides.

Normalisation is SQuAD's: lower case, drop punctuation, drop the articles
*a*, *an*, *the*, collapse white space. A gold answer that normalises to
nothing (e.g. ``"The"``) never matches.

Containment must not pass on a stray match: a long reply holds many words,
and a short gold answer is likely to be among them by chance (gold
``"March"`` in "The International Day for … is observed on March 11th").
So an occurrence of a gold answer in the reply counts only when:

* **It is not an echo of the question.** The reply must hold the gold answer
  more times than the question does: "The capital of Holy See (Vatican City
  State) is Rome." restates gold ``"Vatican City State"`` from the question
  and does not answer it. (A choice question, "X or Y?", therefore needs
  the bare answer or a judge.)
* **A short gold answer stands on its own.** A gold answer is *short* when it
  normalises to one word or to at most :data:`SHORT_GOLD_CHARS` characters
  (``"Paris"``, ``"leg"``, ``"DKK"``, ``"1972"``). An occurrence of a short
  gold answer counts only when:

  1. it lies in the reply's *lead*: the fewest whole sentences from its
     start that hold at least :data:`LEAD_WORDS` words (so a short opening
     such as "Good question!" does not use it up; the whole reply when it is
     shorter). A model states its answer first; later sentences list
     alternatives and background (lm-evaluation-harness's NQ-Open task,
     stricter, cuts the answer at the first newline, period or comma);
  2. neither neighbouring word holds a digit: a month-only gold answer does
     not match a "month day" or "month year" date (``"March"`` in "March
     11th", "May 2010"), nor does a word that starts a numbered name
     (``"Apollo"`` in "Apollo 11");
  3. it is not followed, in the same phrase (no punctuation between), by a
     capitalised word (not an all-capitals one such as an acronym): then it
     is only the start of a longer name (``"Paris"`` in "Paris Hilton",
     ``"March"`` in "March Madness"). A capitalised word *before* it is
     allowed: given names and titles precede surnames (``"Melville"`` in
     "Herman Melville");
  4. a gold answer written in capitals (an acronym: ``"DKK"``, ``"US"``)
     appears in capitals (``"US"`` is not found in "let us see").

  Rules 1 to 3 do not apply to a gold answer that holds a digit: numbers are
  whole words already, dates put them beside other numbers ("December 14,
  1972"), and a worked answer reaches its number after its reasoning.

The guards only ever turn a containment match into no match; exact match is
untouched, and a reply they reject can still be judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uq_guard._exceptions import ConfigurationError
from uq_guard.scoring.answer_words import normalize_answer

__all__ = [
    "LEAD_WORDS",
    "SHORT_GOLD_CHARS",
    "Correctness",
    "Judge",
    "Rule",
    "assess_answer",
    "normalize_answer",
]

Rule = Literal["exact_match", "containment", "judge", "none"]

#: A judge: ``(question, answer, gold_answers) -> bool``, e.g. a call to a
#: grader model. It must return a real bool (a string such as "no" would be truthy).
Judge = Callable[[str, str, Sequence[str]], bool]

#: A gold answer of at most this many characters (normalised) is *short*, as is any one-word one.
SHORT_GOLD_CHARS = 4
#: The reply's lead: its fewest first sentences that hold at least this many (normalised) words.
LEAD_WORDS = 10

_DIGIT = re.compile(r"\d")
# a sentence ends at . ! ? (before closing quotes or brackets) followed by a capital or a digit
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")
_SENTENCE_START = re.compile(r"^[\"'“‘(\[]*[A-Z0-9]")
# a full stop after these is an abbreviation, not the end of a sentence
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "mt", "jr", "sr", "vs", "no", "ft"})
_PHRASE_END = re.compile(r"[,;:.!?)\]}\"”’]$")
_PHRASE_START = re.compile(r"^[(\[{\"“‘]")


@dataclass(frozen=True)
class Correctness:
    """The verdict on one answer.

    Attributes:
        correct: the answer counts as right.
        rule: what decided: ``exact_match``, ``containment``, ``judge``, or
            ``none`` (no rule matched and there was no judge).
        matched: the gold answer that matched (for the two rules), else None.
    """

    correct: bool
    rule: Rule
    matched: str | None = None


def assess_answer(
    answer: str,
    gold: str | Sequence[str],
    *,
    question: str = "",
    judge: Judge | None = None,
    containment: bool = True,
) -> Correctness:
    """Judge ``answer`` against any of the ``gold`` answers.

    Args:
        answer: the model's reply.
        gold: one gold answer or several (any one suffices).
        question: the question asked: a gold answer the reply only restates from
            it does not count (see the module docstring); also passed to the judge.
        judge: consulted only when no rule matched; its verdict is recorded
            with ``rule="judge"``. Its exceptions propagate (a runner decides
            whether a failing judge stops the run).
        containment: also accept a reply containing a gold answer (rule 2, with
            the guards against stray matches of the module docstring).

    Raises:
        ConfigurationError: no gold answers, a non-string answer or gold
            answer, or a judge that returned something other than a bool.
    """
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ConfigurationError("gold must hold at least one gold answer")
    if not isinstance(answer, str) or not all(isinstance(g, str) for g in golds):
        raise ConfigurationError("answer and gold answers must be strings")

    said = normalize_answer(answer)
    normalised = [(g, normalize_answer(g)) for g in golds]
    for original, norm in normalised:
        if norm and said == norm:
            return Correctness(True, "exact_match", original)
    if containment:
        reply = _Reply(answer)
        asked = normalize_answer(question).split()
        for original, norm in normalised:
            if norm and _contains(reply, original, norm.split(), asked):
                return Correctness(True, "containment", original)
    if judge is None:
        return Correctness(False, "none")
    verdict = judge(question, answer, golds)
    if not isinstance(verdict, (bool, np.bool_)):
        raise ConfigurationError(
            f"the judge must return a bool, got {type(verdict).__name__}: {verdict!r}"
        )
    return Correctness(bool(verdict), "judge")


class _Reply:
    """A reply's normalised words, each with the raw word it came from and its sentence."""

    def __init__(self, text: str) -> None:
        self.words: list[str] = []  # normalised, as normalize_answer(text).split()
        self.raw: list[int] = []  # index into raw_words of each normalised word
        self.raw_words: list[str] = []
        self.phrase_ends: set[int] = set()  # raw words after which a phrase ends
        sentence_of_raw: list[int] = []
        sentence = 0
        for line in text.splitlines():
            line_words = line.split()
            for position, raw_word in enumerate(line_words):
                index = len(self.raw_words)
                self.raw_words.append(raw_word)
                sentence_of_raw.append(sentence)
                for word in normalize_answer(raw_word).split():
                    self.words.append(word)
                    self.raw.append(index)
                following = line_words[position + 1] if position + 1 < len(line_words) else None
                if (
                    following is None
                    or _PHRASE_END.search(raw_word)
                    or _PHRASE_START.search(following)
                ):
                    self.phrase_ends.add(index)
                if following is not None and _ends_sentence(raw_word, following):
                    sentence += 1
            if line_words:  # a line break ends a sentence
                sentence += 1
        self.lead_end = self._lead_end(sentence_of_raw)

    def _lead_end(self, sentence_of_raw: list[int]) -> int:
        """Number of normalised words in the lead: whole sentences up to LEAD_WORDS words."""
        for count in range(len(self.words)):
            if count >= LEAD_WORDS:
                previous = sentence_of_raw[self.raw[count - 1]]
                if sentence_of_raw[self.raw[count]] != previous:
                    return count
        return len(self.words)


def _ends_sentence(word: str, following: str) -> bool:
    if not _SENTENCE_END.search(word) or not _SENTENCE_START.search(following):
        return False
    stem = word.rstrip("\"'”’)]").rstrip(".!?")
    if word.rstrip("\"'”’)]").endswith("."):
        letters = stem.replace(".", "")
        # "J.", "U.S.", "Dr.": initials and abbreviations, not ends of sentences
        if len(letters) <= 1 or "." in stem or stem.lower() in _ABBREVIATIONS:
            return False
    return True


def _occurrences(words: Sequence[str], gold: Sequence[str]) -> list[int]:
    size = len(gold)
    return [i for i in range(len(words) - size + 1) if list(words[i : i + size]) == list(gold)]


def _contains(reply: _Reply, original: str, gold: list[str], question: Sequence[str]) -> bool:
    """Rule 2 with its guards: the reply holds the gold answer more often than the question."""
    found = _occurrences(reply.words, gold)
    short = len(gold) == 1 or len(" ".join(gold)) <= SHORT_GOLD_CHARS
    if short:
        found = [start for start in found if _stands_alone(reply, original, gold, start)]
    return len(found) > len(_occurrences(question, gold))


def _stands_alone(reply: _Reply, original: str, gold: list[str], start: int) -> bool:
    """Rules 1-4 of the module docstring for one occurrence of a short gold answer."""
    end = start + len(gold)  # one past the last word
    letters = [c for c in original if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        raw_span = sorted({reply.raw[j] for j in range(start, end)})
        if any(c.islower() for i in raw_span for c in reply.raw_words[i]):
            return False
    if any(_DIGIT.search(word) for word in gold):
        return True
    if start >= reply.lead_end:
        return False
    neighbours = reply.words[start - 1 : start] + reply.words[end : end + 1]
    if any(_DIGIT.search(word) for word in neighbours):
        return False
    last_raw = reply.raw[end - 1]
    if last_raw not in reply.phrase_ends and last_raw + 1 < len(reply.raw_words):
        following = reply.raw_words[last_raw + 1]
        if following[:1].isupper() and any(c.islower() for c in following):
            return False
    return True
