"""Lexicons: where GAAP gets the substitutes ``SUB(t)`` of a key token ``t``.

* :class:`WordNetLexicon` (the paper's choice, the default): WordNet synonyms
  ∪ hypernyms ∪ hyponyms through nltk. Needs the corpus (``uq-guard setup
  wordnet``); makes no model call.
* :class:`ModelLexicon`: asks a chat model for substitutes of *all* key
  tokens in one call (costs one model call per guarded call).
* :class:`UserLexicon`: a dict the caller supplies (domain vocabulary).
* :class:`CombinedLexicon`: the union of several, in order.

:func:`default_lexicon` picks one for ``GuardConfig.gaap_lexicon``; with
``"auto"`` the order is: the user dict (when given) together with WordNet
when its corpus is installed, else the model lexicon when a model is at
hand, else the user dict alone, else none (GAAP then only deletes words).
The lexicon's ``name`` lands in the report as ``perturbation_lexicon``.

Substitutes never include ``t`` itself (case-insensitively) and never the
empty string: deletion is GAAP's own operator, not a lexicon entry.

The lexicons live one to a module: :mod:`uq_guard.perturb.wordnet_lexicon`,
:mod:`uq_guard.perturb.model_lexicon`, and the small ones here; this module
re-exports them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from uq_guard.backend import Backend, Usage
from uq_guard.perturb.model_lexicon import (
    SUBSTITUTES_EXAMPLES,
    SUBSTITUTES_SYSTEM,
    ModelLexicon,
    parse_substitutes,
)
from uq_guard.perturb.substitutes import Lexicon, Substitutions, clean_options
from uq_guard.perturb.wordnet_lexicon import (
    Sense,
    WordNetLexicon,
    inflect_like,
    preload_wordnet,
    wordnet_senses,
    wordnet_substitutes,
)

__all__ = [
    "SUBSTITUTES_EXAMPLES",
    "SUBSTITUTES_SYSTEM",
    "CombinedLexicon",
    "Lexicon",
    "ModelLexicon",
    "NoLexicon",
    "Sense",
    "Substitutions",
    "UserLexicon",
    "WordNetLexicon",
    "default_lexicon",
    "inflect_like",
    "parse_substitutes",
    "preload_wordnet",
    "wordnet_senses",
    "wordnet_substitutes",
]

logger = logging.getLogger(__name__)


class UserLexicon:
    """Substitutes from a dict the caller supplies, looked up case-insensitively.

    Args:
        mapping: word -> its substitutes (e.g. ``{"car": ["automobile", "vehicle"]}``).
    """

    name = "user"

    def __init__(self, mapping: Mapping[str, Sequence[str]]) -> None:
        self.mapping = {key.casefold(): list(values) for key, values in mapping.items()}

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        options = {
            word: clean_options(word, self.mapping.get(word.casefold(), []))
            for word in dict.fromkeys(words)
        }
        return Substitutions(options=options, lexicon=self.name)


class NoLexicon:
    """No substitutes at all: GAAP can still delete key tokens."""

    name = "none"

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        return Substitutions(options={word: [] for word in words}, lexicon=self.name)


class CombinedLexicon:
    """The union of several lexicons' substitutes, in the given order."""

    def __init__(self, lexicons: Sequence[Lexicon]) -> None:
        self.lexicons = list(lexicons)
        self.name = "+".join(lexicon.name for lexicon in self.lexicons)

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        parts = [await lexicon.substitutes(words, context) for lexicon in self.lexicons]
        options: dict[str, list[str]] = {}
        for word in dict.fromkeys(words):
            merged = [option for part in parts for option in part.options.get(word, [])]
            options[word] = clean_options(word, merged)
        usage = Usage()
        pos: dict[str, str] = {}
        notes: list[str] = []
        degraded: list[str] = []
        for part in parts:
            usage = usage + part.usage
            pos = {**part.pos, **pos}
            notes.extend(part.notes)
            degraded.extend(part.degraded_reasons)
        return Substitutions(
            options=options,
            lexicon=self.name,
            pos=pos,
            usage=usage,
            notes=notes,
            degraded_reasons=degraded,
        )


def default_lexicon(
    choice: str = "auto",
    *,
    backend: Backend | None = None,
    user_substitutions: Mapping[str, Sequence[str]] | None = None,
    embedder: Any = None,
    sense: Literal["context", "any"] = "any",
) -> Lexicon:
    """The lexicon ``GuardConfig.gaap_lexicon`` names (see the module docstring for ``auto``).

    Args:
        choice: ``"auto"``, ``"wordnet"``, ``"model"``, ``"user"`` or ``"none"``.
        backend: the model a model lexicon asks.
        user_substitutions: the user dict.
        embedder / sense: how WordNet picks senses (see :class:`WordNetLexicon`).

    Raises:
        ConfigurationError: the named lexicon cannot be built (no WordNet
            corpus, no model, no dict), naming ``gaap_lexicon`` and the fix.
    """
    from uq_guard._exceptions import ConfigurationError
    from uq_guard.perturb.wordnet import wordnet_available

    user = UserLexicon(user_substitutions) if user_substitutions else None
    wordnet = WordNetLexicon(embedder=embedder, sense=sense, preload=False)
    if choice == "wordnet":
        if not wordnet_available():
            raise ConfigurationError(
                "gaap_lexicon='wordnet' but the WordNet corpus is not installed; "
                "run `uq-guard setup wordnet`"
            )
        preload_wordnet()
        return CombinedLexicon([user, wordnet]) if user else wordnet
    if choice == "model":
        if backend is None:
            raise ConfigurationError("gaap_lexicon='model' needs a model to ask")
        return ModelLexicon(backend)
    if choice == "user":
        if user is None:
            raise ConfigurationError("gaap_lexicon='user' needs gaap_substitutions (a dict)")
        return user
    if choice == "none":
        return NoLexicon()
    if choice != "auto":
        raise ConfigurationError(
            f"gaap_lexicon={choice!r}: choose one of auto, wordnet, model, user, none"
        )
    if wordnet_available():
        preload_wordnet()
        return CombinedLexicon([user, wordnet]) if user else wordnet
    if backend is not None:
        logger.warning(
            "WordNet is not installed (run `uq-guard setup wordnet`); "
            "GAAP asks the model for substitutes instead (one extra call)"
        )
        return CombinedLexicon([user, ModelLexicon(backend)]) if user else ModelLexicon(backend)
    if user is not None:
        return user
    logger.warning("no lexicon for GAAP (run `uq-guard setup wordnet`): it can only delete words")
    return NoLexicon()
