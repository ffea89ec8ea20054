"""The WordNet lexicon: synonyms ∪ hypernyms ∪ hyponyms, or the synonyms of the sense in context.

:class:`WordNetLexicon` (the paper's choice, the default) reads WordNet through
nltk and makes no model call. The corpus must be installed (``uq-guard setup
wordnet``, :mod:`uq_guard.perturb.wordnet`); it loads once per process, under
one lock (nltk's reader is not thread-safe), in the background from the first
lexicon on (:func:`preload_wordnet`). WordNet gives base forms, so
substitutes are inflected like the word they replace (:func:`inflect_like`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from uq_guard.perturb.substitutes import Substitutions, clean_options

__all__ = [
    "Sense",
    "WordNetLexicon",
    "inflect_like",
    "preload_wordnet",
    "wordnet_senses",
    "wordnet_substitutes",
]

logger = logging.getLogger(__name__)

_POS_ORDER = ("n", "v", "a", "r")


def inflect_like(word: str, lemma: str, phrase: str) -> str:
    """``phrase`` given the regular inflection that turns ``lemma`` into ``word``.

    WordNet returns base forms, so a substitute for "cities" would read
    "metropolis"; this makes it "metropolises". Only the regular suffixes
    -s/-es, -ed and -ing are copied: a plural onto the phrase's head noun
    (its last word, or the word before "of": "birds of prey"), a verb
    ending onto its first word ("looked up"). Irregular forms are left alone.
    """
    if word == lemma or not phrase:
        return phrase
    suffix = word[len(lemma) :] if word.startswith(lemma) else ""
    if not suffix and lemma.endswith("y") and word == lemma[:-1] + "ies":
        suffix = "s"  # city -> cities
    if not suffix and lemma.endswith("e") and word.startswith(lemma[:-1]):
        suffix = word[len(lemma) - 1 :]  # make -> making, bake -> baked
    if suffix in ("s", "es"):
        parts = phrase.split(" ")
        # the head of "bird of prey" is "bird"; "words" and "glasses" are plural already
        head = parts.index("of") - 1 if "of" in parts[1:] else len(parts) - 1
        if not re.search(r"[^s]s$", parts[head]):
            parts[head] = _plural(parts[head])
        return " ".join(parts)
    if suffix in ("ed", "d", "ing"):
        parts = phrase.split(" ")
        head = parts[0]
        if suffix == "ing":
            stem = head[:-1] if head.endswith("e") and not head.endswith("ee") else head
            parts[0] = stem + "ing"
        else:
            parts[0] = head + ("d" if head.endswith("e") else "ed")
        return " ".join(parts)
    return phrase


def _plural(noun: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


# nltk's WordNet reader is not thread-safe (lazy loading, shared file handles read
# with seek): every use of it holds this lock, re-entrant for the nested load
_WORDNET_LOCK = threading.RLock()
_WORDNET: list = []  # the loaded corpus reader, once loaded
_PRELOAD: list[threading.Thread] = []  # the background load, once started
_PRELOAD_LOCK = threading.Lock()


def _wordnet():
    """The loaded WordNet reader; the first caller loads it (seconds), the others wait.

    The load runs under the WordNet lock (a background preload and a lookup may overlap).
    """
    if not _WORDNET:
        with _WORDNET_LOCK:
            if not _WORDNET:
                from uq_guard.perturb.wordnet import ensure_nltk_path

                ensure_nltk_path()
                from nltk.corpus import wordnet

                wordnet.ensure_loaded()
                _WORDNET.append(wordnet)
    return _WORDNET[0]


def preload_wordnet() -> threading.Thread | None:
    """Start loading WordNet in a daemon thread, so the first guarded call does not wait.

    Loading takes several seconds of CPU (about 7 s on two shared cores). A
    lookup that comes before it is done waits for this load instead of
    starting another. A missing corpus is not reported here: the lookup
    raises as it would without a preload.

    Returns:
        the loading thread (the same one for every caller while it runs), or
        None when WordNet is already loaded.
    """
    if _WORDNET:
        return None
    with _PRELOAD_LOCK:  # not the WordNet lock: that one is held for the whole load
        if not _PRELOAD:
            _PRELOAD.append(
                threading.Thread(target=_load_quietly, name="uq_guard-wordnet-preload", daemon=True)
            )
            _PRELOAD[0].start()
    return _PRELOAD[0]


def _load_quietly() -> None:
    try:
        _wordnet()
    except LookupError as exc:
        logger.debug("WordNet preload skipped: %s", exc)


@functools.lru_cache(maxsize=20_000)
def wordnet_substitutes(word: str) -> tuple[tuple[str, ...], str | None]:
    """WordNet synonyms ∪ hypernyms ∪ hyponyms of ``word``, and the part of speech kept.

    The part of speech is the one with the most senses of ``word`` (ties in
    the order noun, verb, adjective, adverb): without a tagger that is the
    likeliest reading, and keeping to it stops "capital" (noun) drawing
    adjective substitutes. Synonyms, hypernyms and hyponyms are interleaved
    (sense order within each), so a truncated list still holds all three
    kinds. Lemmas are cleaned (``triple_crown`` -> ``triple crown``),
    inflected like ``word`` when regular, and ``word`` itself is dropped.

    Thread-safe: lookups run one at a time (nltk's reader is not thread-safe)
    and repeated words come from a cache.

    Raises:
        LookupError: the WordNet corpus is not installed.
    """
    with _WORDNET_LOCK:
        return _lookup_wordnet(word)


def _pos_of(synset: Any) -> str:
    """WordNet's part of speech of a synset, adjective satellites (``s``) read as ``a``."""
    return "a" if synset.pos() == "s" else synset.pos()


def _alternatives(word: str, lemma: str, names: Sequence[str]) -> tuple[str, ...]:
    """WordNet lemma names as substitutes of ``word``: cleaned, inflected like it, not itself."""
    phrases = [name.replace("_", " ") for name in names]
    others = [phrase for phrase in phrases if phrase.casefold() != lemma.casefold()]
    return tuple(clean_options(word, [inflect_like(word, lemma, p) for p in others]))


def _lookup_wordnet(word: str) -> tuple[tuple[str, ...], str | None]:
    wn = _wordnet()
    lowered = word.lower()
    synsets = wn.synsets(lowered)
    if not synsets:
        return (), None
    counts: dict[str, int] = {}
    for synset in synsets:
        counts[_pos_of(synset)] = counts.get(_pos_of(synset), 0) + 1
    pos = max(_POS_ORDER, key=lambda p: (counts.get(p, 0), -_POS_ORDER.index(p)))
    senses = [s for s in synsets if _pos_of(s) == pos]
    lemma = wn.morphy(lowered, pos) or lowered
    kinds: list[list[str]] = [[], [], []]
    for sense in senses:
        kinds[0].extend(sense.lemma_names())
        for hypernym in sense.hypernyms() + sense.instance_hypernyms():
            kinds[1].extend(hypernym.lemma_names())
        for hyponym in sense.hyponyms():
            kinds[2].extend(hyponym.lemma_names())
    interleaved = [name for group in _zip_longest(kinds) for name in group]
    return _alternatives(lowered, lemma, interleaved), pos


@dataclass(frozen=True)
class Sense:
    """One WordNet sense of a word: what :class:`WordNetLexicon` chooses among in context.

    Attributes:
        pos: WordNet's part of speech (``n``, ``v``, ``a``, ``r``).
        gloss: the lemmas and the definition, as text to embed
            (``"capital: a seat of government"``).
        synonyms: the sense's other lemmas, cleaned and inflected like the word.
    """

    pos: str
    gloss: str
    synonyms: tuple[str, ...]


@functools.lru_cache(maxsize=20_000)
def wordnet_senses(word: str) -> tuple[Sense, ...]:
    """Every WordNet sense of ``word`` with its synonyms; none for a compared adjective.

    A comparative or superlative ("larger", "largest") gets no senses: its
    synonyms would drop the comparison, which is what the question asks.

    Raises:
        LookupError: the WordNet corpus is not installed.
    """
    with _WORDNET_LOCK:
        wn = _wordnet()
        lowered = word.lower()
        base = wn.morphy(lowered, "a")
        if base and base != lowered and re.search(r"(er|est)$", lowered):
            return ()
        senses = []
        for synset in wn.synsets(lowered):
            pos = _pos_of(synset)
            lemma = wn.morphy(lowered, pos) or lowered
            names = synset.lemma_names()
            gloss = f"{', '.join(n.replace('_', ' ') for n in names)}: {synset.definition()}"
            senses.append(Sense(pos, gloss, _alternatives(lowered, lemma, names)))
    return tuple(senses)


def _zip_longest(lists: list[list[str]]) -> list[list[str]]:
    longest = max((len(items) for items in lists), default=0)
    return [[items[i] for items in lists if i < len(items)] for i in range(longest)]


class WordNetLexicon:
    """WordNet substitutes: of the sense that fits the prompt, or of every sense.

    * ``sense="context"`` (needs ``embedder``): the synonyms of the one sense
      of the word whose gloss (lemmas and definition, :class:`Sense`) is
      closest to the prompt in embedding space, so "capital" in "What is the
      capital of Peru?" keeps to "a seat of government" and never becomes
      "venture capital", and "used" in "What currency is used in Peru?"
      becomes "employed", not "puted". No hypernyms or hyponyms: a broader or
      narrower word asks another question.
    * ``sense="any"`` (the paper's choice): synonyms ∪ hypernyms ∪ hyponyms of
      the word's most frequent part of speech (:func:`wordnet_substitutes`).

    The corpus loads once per process (several seconds), off the event loop:
    in a background thread from construction on (``preload=True``), so that
    a guard built at start-up has it ready for its first call.

    Args:
        embedder: an :class:`~uq_guard.embeddings.Embedder` or a zero-argument
            callable returning one (needed for ``sense="context"``).
        sense: ``"context"`` or ``"any"``; ``"context"`` without an embedder
            falls back to ``"any"``.
        preload: start loading WordNet now, in a background thread.
    """

    name = "wordnet"

    def __init__(
        self,
        *,
        embedder: Any = None,
        sense: Literal["context", "any"] = "any",
        preload: bool = True,
    ) -> None:
        self._embedder = embedder
        self.sense = sense if embedder is not None else "any"
        if preload:
            preload_wordnet()

    @property
    def embedder(self) -> Any:
        if self._embedder is not None and not hasattr(self._embedder, "encode"):
            self._embedder = self._embedder()
        return self._embedder

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        return await asyncio.to_thread(self.lookup, words, context)

    def lookup(self, words: Sequence[str], context: str = "") -> Substitutions:
        """The synchronous lookup behind :meth:`substitutes`."""
        if self.sense == "context" and context.strip():
            return self._lookup_in_context(words, context)
        options: dict[str, list[str]] = {}
        pos: dict[str, str] = {}
        for word in dict.fromkeys(words):
            found, tag = wordnet_substitutes(word)
            options[word] = list(found)
            if tag is not None:
                pos[word] = tag
        return Substitutions(options=options, lexicon=self.name, pos=pos)

    def _lookup_in_context(self, words: Sequence[str], context: str) -> Substitutions:
        distinct = list(dict.fromkeys(words))
        senses = {word: wordnet_senses(word) for word in distinct}
        glosses = list(dict.fromkeys(s.gloss for found in senses.values() for s in found))
        options: dict[str, list[str]] = {word: [] for word in distinct}
        pos: dict[str, str] = {}
        if not glosses:
            return Substitutions(options=options, lexicon=self.name)
        vectors = self.embedder.encode([context, *glosses])
        closeness = dict(zip(glosses, vectors[1:] @ vectors[0], strict=True))
        for word, found in senses.items():
            if found:
                best = max(found, key=lambda s: float(closeness[s.gloss]))
                options[word] = list(best.synonyms)
                pos[word] = best.pos
        return Substitutions(options=options, lexicon=self.name, pos=pos)
