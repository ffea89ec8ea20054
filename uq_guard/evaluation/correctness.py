"""Is a free-text answer right? SQuAD-style rules, an optional judge, and a record of which decided.

Rules, in order (ALGORITHMS.md §5):

1. ``exact_match``: the normalised answer equals a normalised gold answer.
2. ``containment``: a normalised gold answer occurs in the normalised
   answer as a whole run of words (so gold ``"1972"`` is found in
   ``"in december 1972"``, while gold ``"9"`` is not found in ``"1990"``).
3. ``judge``: when no rule matched and a judge was given, the judge decides.

Normalisation is SQuAD's: lower case, drop punctuation, drop the articles
*a*, *an*, *the*, collapse white space. A gold answer that normalises to
nothing (e.g. ``"The"``) never matches.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uq_guard._exceptions import ConfigurationError

__all__ = ["Correctness", "Judge", "Rule", "assess_answer", "normalize_answer"]

Rule = Literal["exact_match", "containment", "judge", "none"]

#: A judge: ``(question, answer, gold_answers) -> bool``, e.g. a call to a
#: grader model. It must return a real bool (a string such as "no" would be truthy).
Judge = Callable[[str, str, Sequence[str]], bool]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


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
        question: passed to the judge.
        judge: consulted only when no rule matched; its verdict is recorded
            with ``rule="judge"``. Its exceptions propagate (a runner decides
            whether a failing judge stops the run).
        containment: also accept a reply containing a gold answer (rule 2).

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
        padded = f" {said} "
        for original, norm in normalised:
            if norm and f" {norm} " in padded:
                return Correctness(True, "containment", original)
    if judge is None:
        return Correctness(False, "none")
    verdict = judge(question, answer, golds)
    if not isinstance(verdict, (bool, np.bool_)):
        raise ConfigurationError(
            f"the judge must return a bool, got {type(verdict).__name__}: {verdict!r}"
        )
    return Correctness(bool(verdict), "judge")
