"""Agreement between answers by the words that answer: what sentence embeddings miss.

A sentence embedding places "7 times 8 is 54" next to "7 times 8 is 56" and
"The capital is Sydney" next to "The capital is Canberra": the sentences
differ in the one word that is the answer. This module compares answers by
their *content words*: the SQuAD-normalised words (Rajpurkar et al. 2016)
that the question does not contain and that are not function words, so that
restating the question or sharing "the" does not count as agreeing.

* :func:`word_overlap`: the Jaccard similarity of two answers' content-word
  sets (Lin et al. 2024 use it between sampled answers; LM-Polygraph's
  lexical similarity is its relative). 1 for the same words, 0 for none shared.
* :func:`answer_word_similarity`: that similarity for every pair of a list of
  texts, the answer graph of the ``"answer_words"`` similarity (S_Y of
  Inv-Entropy, measured in ``benchmarks/results/README.md``).
* :func:`reply_word_agreement`: the mean :func:`overlap_coefficient` of the
  reply with each sampled answer, a confidence (1 = every sample's words are
  all in the reply, or the reply's all in the sample). The overlap
  coefficient divides by the shorter side: the reply may run to hundreds of
  tokens while samples are capped short, and "Herman Melville" agrees with a
  paragraph that names him (Jaccard would count the paragraph's other words
  against it).

Normalisation is SQuAD's, shared with the grading rules of
:mod:`uq_guard.evaluation.correctness`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

from uq_guard._stopwords import STOPWORDS

__all__ = [
    "answer_word_similarity",
    "answer_words",
    "content_words",
    "normalize_answer",
    "overlap_coefficient",
    "reply_word_agreement",
    "word_overlap",
]

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


def content_words(text: str, question: str = "") -> frozenset[str]:
    """The answer words of ``text`` that are not function words.

    When only function words are left ("No.", "It is."), those are kept: a
    bare "no" is an answer, and two such replies should still compare.
    """
    said = answer_words(text, question)
    return frozenset(word for word in said if word not in STOPWORDS) or frozenset(said)


def word_overlap(first: frozenset[str], second: frozenset[str]) -> float:
    """Jaccard similarity of two word sets: 1.0 when both are empty, 0.0 when one is."""
    if not first and not second:
        return 1.0
    return len(first & second) / len(first | second)


def overlap_coefficient(first: frozenset[str], second: frozenset[str]) -> float:
    """Shared words over the smaller set's size: 1.0 when both are empty, 0.0 when one is."""
    if not first or not second:
        return float(not first and not second)
    return len(first & second) / min(len(first), len(second))


def answer_word_similarity(texts: Sequence[str], question: str = "") -> np.ndarray:
    """``(n, n)`` :func:`word_overlap` of the texts' :func:`content_words`, unit diagonal.

    Symmetric, in ``[0, 1]``; two unrelated answers (no content word shared) get 0.
    """
    words = [content_words(text, question) for text in texts]
    matrix = np.eye(len(words))
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            matrix[i, j] = matrix[j, i] = word_overlap(words[i], words[j])
    return matrix


def reply_word_agreement(reply: str, samples: Sequence[str], question: str = "") -> float | None:
    """Mean :func:`overlap_coefficient` of the reply's content words with each sample's.

    Args:
        reply: the reply the user gets.
        samples: sampled answers (the engine passes every prompt's: the
            perturbations keep the question, so each sample is a vote).
        question: the user's question; its words are left out of both sides.

    Returns:
        The mean in ``[0, 1]``, or None without samples.
    """
    if not samples:
        return None
    said = content_words(reply, question)
    votes = [overlap_coefficient(said, content_words(s, question)) for s in samples]
    return sum(votes) / len(votes)
