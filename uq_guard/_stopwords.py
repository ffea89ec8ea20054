"""English function words: GAAP never edits them, and answer overlap does not count them.

One list for both readers: :mod:`uq_guard.perturb.words` (they never become
key tokens) and :mod:`uq_guard.scoring.answer_words` (two answers do not agree
by sharing "the" or "is").
"""

from __future__ import annotations

__all__ = ["STOPWORDS"]

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each either
    else even ever every few for from further get gets got had has have having he her here hers
    herself him himself his how however i if in into is it its itself just least less let like
    many may me might more most much must my myself neither no nor not now of off often on once
    one only or other ought our ours ourselves out over own per please quite rather same shall
    she should since so some such than that the their theirs them themselves then there these
    they this those though through thus to too under until up upon us very was we were what
    whatever when whenever where whereas wherever whether which while who whoever whom whose why
    will with within without would yet you your yours yourself yourselves s t d ll m o re ve y
    don doesn didn isn aren wasn weren won wouldn shouldn couldn can't don't isn't
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
"""Function words: they carry no topic and name no answer."""
