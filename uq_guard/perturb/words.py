"""The word lists GAAP reads: which words never become key tokens, and why.

* :data:`STOPWORDS`: function words, which carry no topic;
* :data:`ANSWER_WORDS`: the words an answer depends on (operators, number
  words, the relation a question asks for, comparisons, negation), never
  edited when GAAP preserves the question;
* :data:`FILLER_WORDS`: the only words answer-preserving GAAP may delete;
* :data:`SENTENCE_STARTERS`: words that may open a sentence capitalised
  without being names.
"""

from __future__ import annotations

from uq_guard._stopwords import STOPWORDS

__all__ = ["ANSWER_WORDS", "FILLER_WORDS", "SENTENCE_STARTERS", "STOPWORDS"]

ANSWER_WORDS = frozenset(
    """
    plus minus times multiplied multiply divided divide over sum difference product quotient
    remainder squared cubed square cube root roots power powers percent percentage half halves
    double twice triple add added adding subtract subtracted subtracting multiplying dividing
    equal equals total average mean median modulo mod factorial exponent logarithm log greater
    fewer larger smaller bigger higher lower longer shorter older younger
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
    ninety hundred thousand million billion trillion dozen first second third fourth fifth
    sixth seventh eighth ninth tenth last next previous
    capital capitals currency currencies author authors writer wrote written year years date
    dates day days month months century decade president presidents leader king queen
    emperor prime minister chancellor mayor governor founder founded inventor invented
    director directed composer composed singer sang painter painted architect population
    language languages area height length width weight depth size speed distance temperature
    price cost age born birth birthplace died death dies located location continent country
    countries city cities state states river mountain ocean sea lake island flag anthem
    religion government name named called symbol formula element number color colour
    largest smallest biggest highest lowest longest shortest oldest youngest tallest deepest
    fastest slowest most least best worst earliest latest nearest farthest furthest
    not never none without nobody nothing cannot
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
"""Words an answer depends on, never edited when GAAP preserves the question.

Operators and number words ("39 *minus* 13", "*twice*"), the relation a
factoid question asks for ("the *capital* of", "the *currency* of", "who
*wrote*"), comparisons ("the *largest*") and negation. Substituting or
deleting one of them changes what is asked (ALGORITHMS.md §3, "Answer
preservation"); names, numbers and quoted text are protected on top.
"""

FILLER_WORDS = frozenset(
    "please exactly actually really just basically currently precisely kindly".split()  # noqa: SIM905
)
"""Words GAAP may still delete when it preserves the question: they carry no content."""

SENTENCE_STARTERS = frozenset(
    """
    name list tell give explain describe define write find compare summarize summarise translate
    calculate compute show identify state suggest provide consider imagine suppose assume given
    which whose
    """.split()  # noqa: SIM905
)
"""Words that may open a sentence capitalised without being names ("What", "Name", ...)."""
