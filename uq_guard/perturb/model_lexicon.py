"""The model lexicon: ask a chat model for the substitutes of all key tokens in one call.

It costs one model call per guarded call; GAAP uses it when WordNet is not
installed and a model is at hand (:func:`uq_guard.perturb.lexicon.default_lexicon`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from uq_guard.backend import Backend, GenerationRequest
from uq_guard.perturb.substitutes import Substitutions, clean_options

__all__ = [
    "SUBSTITUTES_EXAMPLES",
    "SUBSTITUTES_SYSTEM",
    "ModelLexicon",
    "parse_substitutes",
]

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
        found[word] = clean_options(word, [*found[word], *items], limit)
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
