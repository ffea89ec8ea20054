"""GAAP's operators, each a small pure function (ALGORITHMS.md §3, steps 2 to 7).

An individual is the prompt's list of word slots (:mod:`uq_guard.perturb.slots`),
each holding the original word, a substitute phrase or ``""`` (deleted).

* :func:`select_key_positions`: the key tokens (KeyBERT's rule).
* :func:`substitution_sets`: ``SUB(t)`` from a lexicon plus deletion.
* :func:`initial_population`: every one-substitution variant.
* :func:`roulette_select`, :func:`crossover`, :func:`mutate`: one generation.
* :func:`fidelity`: the fitness ``a(x_0, x')``.
* :func:`draw_across_generations`: the output, drawn from generations 0, τ, 2τ, ….
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

from uq_guard.perturb.slots import Slot
from uq_guard.scoring.similarity import similarity_of_cosine

__all__ = [
    "Individual",
    "crossover",
    "draw_across_generations",
    "fidelity",
    "initial_population",
    "mutate",
    "roulette_select",
    "select_key_positions",
    "substitution_sets",
]

Individual = tuple[str, ...]
T = TypeVar("T", bound=Hashable)


def select_key_positions(
    slots: Sequence[Slot],
    similarities: dict[int, float],
    key_ratio: float,
    max_keys: int | None = None,
) -> list[int]:
    """KeyBERT's rule: the ``key_ratio`` of the words most similar to the whole prompt.

    Args:
        slots: the segmented prompt.
        similarities: word index -> cosine of its word with the prompt, for
            the candidate words (those GAAP may change).
        key_ratio: the share of the prompt's words to take (at least one).
        max_keys: an upper bound (long prompts).

    Returns:
        Word indices, most similar first (ties: earlier first).
    """
    n_words = sum(1 for slot in slots if slot.kind == "word")
    if n_words == 0 or not similarities:
        return []
    k = max(1, math.ceil(key_ratio * n_words))
    if max_keys is not None:
        k = min(k, max_keys)
    ranked = sorted(similarities, key=lambda index: (-similarities[index], index))
    return ranked[:k]


def _match_case(original: str, substitute: str) -> str:
    if original[:1].isupper() and substitute[:1].islower():
        return substitute[:1].upper() + substitute[1:]
    return substitute


def substitution_sets(
    words: Sequence[str],
    keys: Sequence[int],
    options: dict[str, list[str]],
    max_substitutes: int | None = None,
    deletable: Callable[[str], bool] | None = None,
) -> dict[int, tuple[str, ...]]:
    """``SUB(t)`` for every key position: the lexicon's substitutes, then deletion (``""``).

    Substitutes take the original's capitalisation, never equal the original
    word, and are capped at ``max_substitutes`` (deletion comes on top).
    With ``deletable``, deletion is offered only for the words it accepts.
    """
    sets: dict[int, tuple[str, ...]] = {}
    for index in keys:
        word = words[index]
        found = options.get(word, [])
        seen = {word.casefold(), ""}
        kept: list[str] = []
        for option in found:
            option = _match_case(word, option.strip())
            if option.casefold() in seen:
                continue
            seen.add(option.casefold())
            kept.append(option)
            if max_substitutes is not None and len(kept) >= max_substitutes:
                break
        can_delete = deletable is None or deletable(word)
        sets[index] = (*kept, "") if can_delete else tuple(kept)
    return sets


def initial_population(
    original: Individual, substitutions: dict[int, tuple[str, ...]]
) -> list[Individual]:
    """Every individual made by one substitution at one key position (in key order)."""
    population: list[Individual] = []
    for index, options in substitutions.items():
        for option in options:
            child = list(original)
            child[index] = option
            population.append(tuple(child))
    return list(dict.fromkeys(population))


def roulette_select(fitness: Sequence[float], k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices drawn with replacement, each with probability ∝ its fitness.

    All-zero fitness draws uniformly.
    """
    weights = np.clip(np.asarray(fitness, dtype=np.float64), 0.0, None)
    total = weights.sum()
    if len(weights) == 0:
        return np.zeros(0, dtype=np.int64)
    probabilities = weights / total if total > 0 else None
    return rng.choice(len(weights), size=k, replace=True, p=probabilities)


def crossover(
    first: Individual, second: Individual, rng: np.random.Generator
) -> tuple[Individual, Individual]:
    """One-point crossover at a word boundary: swap the tails after h ~ U{1..p-1}.

    ``p`` is the shorter length; with fewer than two slots there is no
    boundary and the parents come back unchanged.
    """
    p = min(len(first), len(second))
    if p < 2:
        return first, second
    h = int(rng.integers(1, p))
    return first[:h] + second[h:], second[:h] + first[h:]


def mutate(
    individual: Individual,
    substitutions: dict[int, tuple[str, ...]],
    rng: np.random.Generator,
) -> Individual:
    """Replace one random key position with a random, different element of its ``SUB``.

    Exactly one position changes; only positions whose ``SUB`` offers a value
    other than the current one are drawn. With none, ``individual`` comes back.
    """
    choices = {
        index: [option for option in options if option != individual[index]]
        for index, options in substitutions.items()
    }
    open_positions = sorted(index for index, options in choices.items() if options)
    if not open_positions:
        return individual
    index = open_positions[int(rng.integers(len(open_positions)))]
    options = choices[index]
    mutant = list(individual)
    mutant[index] = options[int(rng.integers(len(options)))]
    return tuple(mutant)


def fidelity(
    original: np.ndarray, variants: np.ndarray, similarity: str = "shifted_cosine"
) -> np.ndarray:
    """``a(x_0, x')`` for unit vectors: ``(1 + cos) / 2`` or ``|cos|``, rounded to 6 decimals."""
    if len(variants) == 0:
        return np.zeros(0)
    cosine = np.clip(variants.astype(np.float64) @ original.astype(np.float64), -1.0, 1.0)
    return np.round(similarity_of_cosine(cosine, similarity), 6)


def draw_across_generations(
    populations: Sequence[Sequence[T]],
    m: int,
    stride: int,
    rng: np.random.Generator,
    *,
    pad: bool = True,
) -> tuple[list[T], int]:
    """Draw ``m`` individuals uniformly from generations 0, τ, 2τ, … (τ = ``stride``).

    Round-robin over those generations, a uniform draw within each, no
    repeats; when they hold fewer than ``m`` distinct individuals the draw
    continues in the last population, and (with ``pad``) repeats of drawn
    individuals fill what is still missing.

    Returns:
        The drawn individuals and how many of them are real (distinct).
    """
    if m <= 0 or not populations:
        return [], 0
    chosen: list[T] = []
    taken: set[T] = set()
    pools = []
    for population in populations[:: max(1, stride)]:
        pool = list(dict.fromkeys(population))
        pools.append([pool[i] for i in rng.permutation(len(pool))])
    while len(chosen) < m and any(pools):
        for pool in pools:
            while pool and len(chosen) < m:
                candidate = pool.pop()
                if candidate not in taken:
                    taken.add(candidate)
                    chosen.append(candidate)
                    break
    last = list(dict.fromkeys(populations[-1]))
    for i in rng.permutation(len(last)):
        if len(chosen) >= m:
            break
        if last[i] not in taken:
            taken.add(last[i])
            chosen.append(last[i])
    n_real = len(chosen)
    if pad and 0 < n_real < m:
        source = last or chosen
        chosen.extend(source[int(i)] for i in rng.integers(len(source), size=m - n_real))
    return chosen, n_real
