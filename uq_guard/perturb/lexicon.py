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
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from uq_guard.backend import Backend, GenerationRequest, Usage

__all__ = [
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


def _clean_options(word: str, options: Sequence[str], limit: int | None = None) -> list[str]:
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


# -- WordNet -----------------------------------------------------------------

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
    return tuple(_clean_options(word, [inflect_like(word, lemma, p) for p in others]))


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


# -- a user dict -----------------------------------------------------------------


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
            word: _clean_options(word, self.mapping.get(word.casefold(), []))
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
            options[word] = _clean_options(word, merged)
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


# -- the model lexicon ----------------------------------------------------------------

SUBSTITUTES_SYSTEM = (
    "You list substitutes: synonyms, broader or narrower terms. Answer only with lines of "
    "the form `word: substitute, substitute, substitute`. The words come from this "
    "sentence: {context}"
)
# Worked examples as earlier chat turns: small models follow them where they
# ignore a written instruction (SmolLM2-135M answers the question instead).
SUBSTITUTES_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("tallest, building", "tallest: highest, biggest, largest\nbuilding: tower, skyscraper"),
    ("city, river", "city: town, metropolis, municipality\nriver: stream, waterway, creek"),
)

_ITEM_SPLIT = re.compile(r"\s*[,;/|]\s*|\s+\bor\b\s+")
_LINE_MARKER = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}\s*[.):\]])\s*")
_QUOTES = "\"'“”‘’`*"


def parse_substitutes(text: str, words: Sequence[str], limit: int = 8) -> dict[str, list[str]]:
    """Substitutes for ``words`` found in a model's answer ``text``.

    Reads lines of the form ``word: a, b, c`` (also ``word - a, b``,
    ``word -> a``, numbered or bulleted, quoted or bold), matching ``word``
    case-insensitively and in the singular or plural. Lines about other
    words, items longer than five words, copies of the word and duplicates
    are dropped; a word the model skipped gets an empty list. Never raises on malformed text.
    """
    wanted = {word.casefold(): word for word in words}
    found: dict[str, list[str]] = {word: [] for word in wanted.values()}
    for raw_line in text.splitlines():
        line = _LINE_MARKER.sub("", raw_line).strip()
        match = re.match(r"^([^:=>\-–—]+?)\s*(?::|=>|->|–|—|-|=)\s*(.+)$", line)
        if not match:
            continue
        head = match.group(1).strip().strip(_QUOTES).strip().casefold()
        # small models answer "eagle:" for "eagles": accept the singular or plural
        key = next((k for k in (head, head + "s", head.removesuffix("s")) if k in wanted), None)
        if key is None:
            continue
        word = wanted[key]
        items = [
            item.strip().strip(_QUOTES).strip().rstrip(".")
            for item in _ITEM_SPLIT.split(match.group(2))
        ]
        items = [item for item in items if item and len(item.split()) <= 5 and len(item) <= 60]
        found[word] = _clean_options(word, [*found[word], *items], limit)
    return found


class ModelLexicon:
    """Ask a chat model for substitutes of all key tokens in one call.

    The request is a short chat: a system message (the format, and the
    sentence the words come from), two worked examples as earlier turns, then
    ``Substitutes for: w1, w2, ...``. The answer is read by
    :func:`parse_substitutes`.

    Args:
        backend: the model to ask (usually the guarded model itself).
        per_word: how many substitutes to keep per word.
        temperature: sampling temperature of the request.
        max_tokens: cap on the answer's length.
        system: the system message template (``{context}`` placeholder).
        examples: (words, answer) pairs shown as earlier turns.
    """

    name = "model"

    def __init__(
        self,
        backend: Backend,
        *,
        per_word: int = 6,
        temperature: float = 0.3,
        max_tokens: int = 160,
        system: str = SUBSTITUTES_SYSTEM,
        examples: Sequence[tuple[str, str]] = SUBSTITUTES_EXAMPLES,
    ) -> None:
        self.backend = backend
        self.per_word = per_word
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self.examples = tuple(examples)

    def request(self, words: Sequence[str], context: str) -> GenerationRequest:
        """The single request that asks for every word's substitutes."""
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self.system.format(context=context)}
        ]
        for example_words, example_answer in self.examples:
            messages.append({"role": "user", "content": f"Substitutes for: {example_words}"})
            messages.append({"role": "assistant", "content": example_answer})
        messages.append({"role": "user", "content": f"Substitutes for: {', '.join(words)}"})
        return GenerationRequest(
            messages=tuple(messages),
            n=1,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )

    async def substitutes(self, words: Sequence[str], context: str) -> Substitutions:
        distinct = list(dict.fromkeys(words))
        if not distinct:
            return Substitutions(options={}, lexicon=self.name)
        [answer] = await self.backend.generate([self.request(distinct, context)])
        degraded: list[str] = []
        if answer.ok:
            options = parse_substitutes(answer.texts[0], distinct, self.per_word)
        else:
            options = {word: [] for word in distinct}
            degraded.append(f"model lexicon request failed: {answer.error}")
        return Substitutions(
            options=options, lexicon=self.name, usage=answer.usage, degraded_reasons=degraded
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
