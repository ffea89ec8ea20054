"""Word-level agreement of the reply with the samples: the answer words embeddings miss.

A sentence embedding places "7 times 8 is 54" next to "7 times 8 is 56" and
"The capital is Sydney" next to "The capital is Canberra": the sentences
differ in the one word that is the answer. ``reply_word_agreement`` reads
those words. It is the mean SQuAD token F1 (Rajpurkar et al. 2016) between
the reply and each sample of the question, over the words the question does
not contain, so that restating the question does not count as agreeing.
Lexical agreement between sampled answers is an established black-box
uncertainty baseline (Fomicheva et al. 2020; LM-Polygraph's lexical
similarity); this one compares each sample with the reply the user gets.

The score is confidence-like (1 = every sample gives the reply's answer
words, 0 = none shares a word). Normalisation is SQuAD's, shared with the
grading rules of :mod:`uq_guard.evaluation.correctness`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["answer_words", "normalize_answer", "reply_word_agreement", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_words(text: str, question: str = "") -> list[str]:
    """The normalised words of ``text`` that ``question`` does not contain (repeats kept)."""
    asked = set(normalize_answer(question).split())
    return [word for word in normalize_answer(text).split() if word not in asked]


def token_f1(first: Sequence[str], second: Sequence[str]) -> float:
    """SQuAD's token F1 of two word lists: 1.0 when both are empty, 0.0 when one is."""
    if not first or not second:
        return float(not first and not second)
    shared = sum((Counter(first) & Counter(second)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(first), shared / len(second)
    return 2 * precision * recall / (precision + recall)


def reply_word_agreement(reply: str, samples: Sequence[str], question: str = "") -> float | None:
    """Mean token F1 of the reply's answer words with each sample's; None without samples.

    Args:
        reply: the reply the user gets.
        samples: the answers sampled for the question itself (x_0).
        question: the question; its words are left out of both sides.
    """
    if not samples:
        return None
    said = answer_words(reply, question)
    return sum(token_f1(said, answer_words(s, question)) for s in samples) / len(samples)
