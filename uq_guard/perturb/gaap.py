"""GAAP: genetic-algorithm perturbation of the prompt (ALGORITHMS.md §3).

GAAP makes the m variants x_1..x_m of the user's prompt x_0 without asking
any model (with the default WordNet lexicon): key tokens are replaced by
synonyms, hypernyms or hyponyms, or deleted, and a small genetic algorithm
evolves the variants so that they spread from light to strong edits while
staying on topic.

The steps, each a small pure function so that it can be tested alone
(:mod:`uq_guard.perturb.slots` cuts and writes the prompt,
:mod:`uq_guard.perturb.genetic` holds the operators; both re-exported here):

1. :func:`segment` cuts the prompt into words, gaps and *protected* spans
   (:func:`protected_spans`: numbers, quoted text, code, names and the spans
   the caller marks), which no operator ever touches.
2. :func:`select_key_positions`: the ``key_ratio`` of the words most similar
   to the whole prompt (KeyBERT's rule: cosine of each candidate word's
   embedding with the prompt's), stopwords excluded.
3. :func:`substitution_sets`: ``SUB(t)`` from a lexicon plus deletion.
4. :func:`initial_population`: every one-substitution variant.
5. One generation: :func:`roulette_select` by fitness (the similarity
   ``a(x_0, x')``), :func:`crossover` at a word boundary, :func:`mutate` one
   key position of each child; next population = parents ∪ children ∪
   mutants, deduplicated, children under ``min_fidelity`` dropped, capped at
   ``max_population``.
6. Stop after ``max_generations`` or when the best fitness falls under
   ``delta``.
7. :func:`draw_across_generations`: the output is drawn uniformly from the
   populations of generations 0, τ, 2τ, …, topped up from the last one;
   padding (repeats) only when fewer than m distinct variants exist, and
   the result says how many are real.

Choices the paper leaves open, made here:

* An individual is the prompt's list of *word slots*, each holding the
  original word, a substitute phrase or nothing (deleted). Gaps and
  protected spans sit between the slots and are never edited, so every
  individual has the same number of slots: a one-point cut after slot h is a
  word boundary in both parents (p, the shorter length, is that common
  length) and protected spans survive crossover by construction.
* Capitalised words are names, except a sentence's first word when it is a
  stopword or a common instruction verb ("What", "Name", "List", ...).
* When a population exceeds ``max_population`` a uniform random subset is
  kept, not the fittest: keeping the fittest would keep only the lightest
  edits and defeat drawing across generations (roulette selection already
  favours fidelity).
* Each generation selects ``2 * pairs_per_generation`` parents (default 4):
  every new variant costs an embedding, and a new NQ-Open question then
  costs about 71 embedded texts, against 97 with 4 pairs
  (``benchmarks/results/performance/gaap_texts.md``), with no systematic
  AUROC cost on four question sets (``benchmarks/results/default/gaap-pairs.md``).
* Fitness is rounded to 6 decimals so that the last-bit differences of
  batched float arithmetic cannot change a seeded run.
* The random generator is seeded with (seed, CRC-32 of the prompt): the same
  prompt and seed give the same variants in any process. A perturber
  therefore keeps its last ``cache_size`` results and answers a prompt it has
  perturbed before from them, at no cost (a run whose lexicon failed is not
  kept).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from uq_guard.backend import Usage
from uq_guard.embeddings import Embedder
from uq_guard.perturb.base import PerturbationResult
from uq_guard.perturb.frames import FRAME_GENES, apply_frames, frame_options
from uq_guard.perturb.genetic import (
    Individual,
    crossover,
    draw_across_generations,
    fidelity,
    initial_population,
    mutate,
    roulette_select,
    select_key_positions,
    substitution_sets,
)
from uq_guard.perturb.lexicon import Lexicon, Substitutions
from uq_guard.perturb.slots import Slot, protected_spans, render, segment, words_of
from uq_guard.perturb.words import ANSWER_WORDS, FILLER_WORDS, STOPWORDS
from uq_guard.scoring.similarity import SIMILARITIES

__all__ = [
    "STOPWORDS",
    "GAAPPerturber",
    "GAAPRun",
    "Slot",
    "crossover",
    "draw_across_generations",
    "fidelity",
    "initial_population",
    "mutate",
    "protected_spans",
    "render",
    "roulette_select",
    "segment",
    "select_key_positions",
    "substitution_sets",
]

logger = logging.getLogger(__name__)


@dataclass
class GAAPRun:
    """What one GAAP run did (for the report, the benchmark and tests).

    Attributes:
        prompts: the drawn variants (padding included).
        n_real: how many of them are distinct, real variants.
        key_words: the key tokens, most prompt-like first.
        substitutions: ``SUB(t)`` of each key token (deletion as ``""``).
        generations: the populations, generation 0 first.
        fitness: fitness of every individual evaluated, by rendered text.
        stop_reason: ``"max_generations"``, ``"delta"``, ``"no_population"``
            or ``"no_key_tokens"``.
        texts_embedded: texts sent to the embedder (one batch per generation).
        notes: information for the report that loses nothing (a long prompt
            capped, a lexicon without substitutes).
        degraded_reasons: what lost information (no word to change, fewer
            distinct variants than asked, a failed lexicon request).
    """

    prompts: list[str]
    n_real: int
    key_words: list[str] = field(default_factory=list)
    substitutions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    generations: list[list[str]] = field(default_factory=list)
    fitness: dict[str, float] = field(default_factory=dict)
    stop_reason: str = ""
    texts_embedded: int = 0
    notes: list[str] = field(default_factory=list)
    degraded_reasons: list[str] = field(default_factory=list)


def _copy(result: PerturbationResult, **changes: object) -> PerturbationResult:
    """A copy whose lists the caller may change (the guard trims ``prompts``)."""
    return dataclasses.replace(
        result,
        prompts=list(result.prompts),
        notes=list(result.notes),
        degraded_reasons=list(result.degraded_reasons),
        **changes,  # type: ignore[arg-type]
    )


def _is_filler(word: str) -> bool:
    return word.lower() in FILLER_WORDS


@dataclass
class _Plan:
    slots: list[Slot]
    original: Individual  # the word slots, then one "" per frame gene when frames are on
    keys: list[int]
    prompt_vector: np.ndarray | None
    notes: list[str]
    n_words: int = 0

    @property
    def genes(self) -> list[int]:
        """Positions of the frame genes (after the word slots)."""
        return list(range(self.n_words, len(self.original)))

    def render(self, individual: Individual) -> str:
        text = render(self.slots, individual)
        if len(individual) == self.n_words:
            return text
        return apply_frames(text, dict(zip(FRAME_GENES, individual[self.n_words :], strict=True)))


class GAAPPerturber:
    """The GAAP perturber (see the module docstring for the algorithm).

    Args:
        embedder: the engine's embedder, or a zero-argument callable that
            returns it (so the model loads only when GAAP first runs).
        lexicon: where substitutes come from (:mod:`uq_guard.perturb.lexicon`).
        edits: ``"preserving"`` (default) keeps what the prompt asks: the
            words an answer depends on (:data:`ANSWER_WORDS`) are never key
            tokens, and only filler words (:data:`FILLER_WORDS`) may be
            deleted; ``"paper"`` is the paper's algorithm as published (any
            key token may be substituted or deleted).
        frames: add the meaning-neutral genes of :mod:`uq_guard.perturb.frames`
            (an instruction frame, a closing, a punctuation or casing edit) to
            every individual; GAAP's operators treat them like word slots.
        key_ratio: share of the prompt's words taken as key tokens.
        max_generations: generations at most.
        max_population: population cap.
        delta: stop when the best fitness falls under this.
        min_fidelity: variants less similar than this to x_0 are dropped.
        protected: strings never changed, on top of the automatic protection.
        similarity: ``"shifted_cosine"`` or ``"abs_cosine"``: the fitness ``a``.
        seed: with the prompt, fixes the run.
        generation_stride: τ, the step between generations drawn from.
        pairs_per_generation: crossovers per generation.
        max_substitutes: cap on ``SUB(t)`` per key token (deletion on top).
        max_key_tokens: cap on key tokens (long prompts).
        max_candidates: distinct candidate words scored for key tokens (long prompts).
        pad: fill a shortfall with repeats (counted in ``n_real``).
        cache_size: results kept for prompts asked again (0 = none).
    """

    method = "gaap"

    def __init__(
        self,
        embedder: Embedder | Callable[[], Embedder],
        lexicon: Lexicon,
        *,
        edits: Literal["preserving", "paper"] = "preserving",
        frames: bool = True,
        key_ratio: float = 0.3,
        max_generations: int = 8,
        max_population: int = 64,
        delta: float = 0.7,
        min_fidelity: float = 0.5,
        protected: Sequence[str] = (),
        similarity: str = "shifted_cosine",
        seed: int = 0,
        generation_stride: int = 2,
        pairs_per_generation: int = 2,
        max_substitutes: int = 8,
        max_key_tokens: int = 16,
        max_candidates: int = 256,
        pad: bool = True,
        cache_size: int = 1024,
    ) -> None:
        self._embedder = embedder
        self.lexicon = lexicon
        self.edits = edits
        self.frames = frames
        self.key_ratio = key_ratio
        self.max_generations = max_generations
        self.max_population = max_population
        self.delta = delta
        self.min_fidelity = min_fidelity
        self.protected = tuple(protected)
        self.similarity = similarity if similarity in SIMILARITIES else "shifted_cosine"
        self.seed = seed
        self.generation_stride = generation_stride
        self.pairs_per_generation = pairs_per_generation
        self.max_substitutes = max_substitutes
        self.max_key_tokens = max_key_tokens
        self.max_candidates = max_candidates
        self.pad = pad
        self.cache_size = cache_size
        self._results: OrderedDict[tuple[str, int], PerturbationResult] = OrderedDict()
        self._results_lock = threading.Lock()  # one perturber serves calls on many threads

    @property
    def embedder(self) -> Embedder:
        if not hasattr(self._embedder, "encode"):
            self._embedder = self._embedder()  # type: ignore[operator]
        return self._embedder  # type: ignore[return-value]

    def rng(self, prompt: str) -> np.random.Generator:
        """The generator of one run: seeded by the seed and the prompt."""
        return np.random.default_rng([self.seed, zlib.crc32(prompt.encode("utf-8"))])

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        if m <= 0:
            return PerturbationResult(prompts=[], method=self.method, n_requested=0, n_real=0)
        with self._results_lock:
            kept = self._results.get((prompt, m))
            if kept is not None:
                self._results.move_to_end((prompt, m))
                return _copy(kept, usage=Usage())  # made before: no model call this time
        run, substitutions = await self.run(prompt, m)
        result = PerturbationResult(
            prompts=run.prompts,
            method=self.method,
            n_requested=m,
            usage=substitutions.usage if substitutions else Usage(),
            notes=run.notes,
            degraded_reasons=run.degraded_reasons,
            lexicon=substitutions.lexicon if substitutions else self.lexicon.name,
            n_real=run.n_real,
        )
        if self.cache_size > 0 and not (substitutions and substitutions.degraded_reasons):
            with self._results_lock:
                self._results[(prompt, m)] = _copy(result)
                while len(self._results) > self.cache_size:
                    self._results.popitem(last=False)
        return result

    async def run(self, prompt: str, m: int) -> tuple[GAAPRun, Substitutions | None]:
        """One full GAAP run; also returns what the lexicon said (None when not asked)."""
        plan = await asyncio.to_thread(self._plan, prompt)
        if not plan.keys and not plan.genes:
            run = GAAPRun(
                prompts=[],
                n_real=0,
                stop_reason="no_key_tokens",
                notes=list(plan.notes),
                degraded_reasons=["GAAP found no word it may change: no perturbations"],
            )
            return run, None
        key_words = [plan.original[i] for i in plan.keys]
        if key_words:
            substitutions = await self.lexicon.substitutes(key_words, prompt)
        else:
            substitutions = Substitutions(options={}, lexicon=self.lexicon.name)
        run = await asyncio.to_thread(self._evolve, prompt, plan, substitutions, m)
        run.notes = [*plan.notes, *substitutions.notes, *run.notes]
        run.degraded_reasons = [*substitutions.degraded_reasons, *run.degraded_reasons]
        return run, substitutions

    # -- the synchronous parts (run off the event loop) ---------------------------

    def _plan(self, prompt: str) -> _Plan:
        fixed = ANSWER_WORDS if self.edits == "preserving" else ()
        slots = segment(prompt, self.protected, fixed_words=fixed)
        words = words_of(slots)
        original = words + ("",) * len(FRAME_GENES) if self.frames else words
        notes: list[str] = []
        candidates: dict[str, list[int]] = {}
        for slot in slots:
            if slot.kind == "word" and slot.candidate:
                candidates.setdefault(slot.text.lower(), []).append(slot.index)
        if len(candidates) > self.max_candidates:
            notes.append(
                f"long prompt: key tokens chosen among its first {self.max_candidates} "
                "distinct words"
            )
            candidates = dict(list(candidates.items())[: self.max_candidates])
        if not candidates and not self.frames:
            return _Plan(slots, original, [], None, notes, len(words))
        distinct = list(candidates)
        vectors = self.embedder.encode([prompt, *distinct])
        cosines = vectors[1:].astype(np.float64) @ vectors[0].astype(np.float64)
        similarities = {
            index: round(float(cosine), 6)
            for word, cosine in zip(distinct, cosines, strict=True)
            for index in candidates[word]
        }
        keys = select_key_positions(slots, similarities, self.key_ratio, self.max_key_tokens)
        return _Plan(slots, original, keys, vectors[0], notes, len(words))

    def _evaluate(
        self, plan: _Plan, individuals: Sequence[Individual], fitness: dict[Individual, float]
    ) -> int:
        """Fitness of the individuals not seen yet, in one embedding batch; returns texts sent."""
        fresh = [ind for ind in dict.fromkeys(individuals) if ind not in fitness]
        if not fresh:
            return 0
        texts = [plan.render(ind) for ind in fresh]
        assert plan.prompt_vector is not None
        values = fidelity(plan.prompt_vector, self.embedder.encode(texts), self.similarity)
        for individual, value in zip(fresh, values, strict=True):
            fitness[individual] = float(value)
        return len(texts)

    def _cap(self, population: list[Individual], rng: np.random.Generator) -> list[Individual]:
        if len(population) <= self.max_population:
            return population
        keep = np.sort(rng.choice(len(population), size=self.max_population, replace=False))
        return [population[i] for i in keep]

    def _evolve(self, prompt: str, plan: _Plan, found: Substitutions, m: int) -> GAAPRun:
        rng = self.rng(prompt)
        original = plan.original
        deletable = _is_filler if self.edits == "preserving" else None
        subs = substitution_sets(
            original, plan.keys, found.options, self.max_substitutes, deletable
        )
        notes: list[str] = []
        if plan.keys and all(not any(options) for options in subs.values()):
            notes.append(
                f"the {found.lexicon} lexicon had no substitutes for the key tokens "
                f"({', '.join(original[i] for i in plan.keys)})"
                + (": GAAP can only delete them" if self.edits == "paper" else "")
            )
        if plan.genes:
            for position, options in zip(plan.genes, frame_options().values(), strict=True):
                subs[position] = (*options, "")
        fitness: dict[Individual, float] = {}
        outputs = {original}

        def viable(individuals: Iterable[Individual]) -> list[Individual]:
            return [
                ind
                for ind in dict.fromkeys(individuals)
                if ind not in outputs
                and plan.render(ind) != prompt.strip()
                and fitness[ind] >= self.min_fidelity
            ]

        population = self._cap(initial_population(original, subs), rng)
        embedded = self._evaluate(plan, population, fitness)
        population = viable(population)
        generations = [population]
        stop_reason = "max_generations"
        for _ in range(self.max_generations):
            if not population:
                stop_reason = "no_population"
                break
            if max(fitness[ind] for ind in population) < self.delta:
                stop_reason = "delta"
                break
            chosen = roulette_select(
                [fitness[ind] for ind in population], 2 * self.pairs_per_generation, rng
            )
            parents = [population[i] for i in chosen]
            children: list[Individual] = []
            for first, second in zip(parents[::2], parents[1::2], strict=True):
                children.extend(crossover(first, second, rng))
            mutants = [mutate(child, subs, rng) for child in children]
            embedded += self._evaluate(plan, [*children, *mutants], fitness)
            population = self._cap(viable([*parents, *children, *mutants]), rng)
            generations.append(population)

        texts = {ind: plan.render(ind) for ind in fitness}
        # distinct individuals can read the same (a deletion next to a gap): draw texts
        text_generations = [list(dict.fromkeys(texts[ind] for ind in pop)) for pop in generations]
        drawn, n_real = draw_across_generations(
            text_generations, m, self.generation_stride, rng, pad=self.pad
        )
        degraded: list[str] = []
        if n_real < m:
            degraded.append(
                f"GAAP found {n_real} distinct perturbations of {m}"
                + (": the rest repeat them" if self.pad and n_real else "")
            )
        return GAAPRun(
            prompts=drawn,
            n_real=n_real,
            key_words=[original[i] for i in plan.keys],
            substitutions={original[i]: subs[i] for i in plan.keys},
            generations=text_generations,
            fitness={texts[ind]: value for ind, value in fitness.items()},
            stop_reason=stop_reason,
            texts_embedded=embedded,
            notes=notes,
            degraded_reasons=degraded,
        )
