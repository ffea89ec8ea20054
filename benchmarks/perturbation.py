"""How the perturbers compare on real questions: meaning kept, fidelity, diversity, speed.

For each question of a set (``--data``: ``nq`` for NQ-Open dev, found beside
the checkout by default, any JSONL path, or the templated ``countries`` and
``arithmetic`` sets in ``benchmarks/datasets/``) every method is asked for
m = 9 perturbations; the table reports, per method:

* **changed**: on the templated sets, the share of real perturbations that
  no longer ask the same thing, by a rule check (:func:`asks_the_same`): a
  capital or currency question must keep its relation word ("capital",
  "currency") and the country's name; an arithmetic question must keep both
  numbers and its operation (the operator word or an unambiguous synonym:
  "plus"/"added to"/"+", "minus"/"subtract"/"-", "times"/"multiplied"/"×",
  "divided"/"over"/"/"). A faithful paraphrase that words the relation
  differently ("seat of government") counts as changed: the check is strict.
  NaN on NQ-Open, which has no template;
* **fidelity**: mean similarity ``a(x_0, x_i) = (1 + cos) / 2`` of each real
  perturbation to the original question (MiniLM embeddings; 1 = the same);
* **diversity**: mean pairwise cosine distance ``1 - cos(x_i, x_j)`` among a
  question's real perturbations (0 = all identical);
* **cos<0.5**: share of real perturbations whose cosine to the original is
  below 0.5 (they have usually drifted off topic: "where does the last name
  galvez come from" -> "where does the concluding title come from");
* **full set**: share of questions that got m real, distinct perturbations;
* **texts**: prompts the perturber asked the embedder for, per question
  (what a new question costs; cached or not);
* **s/prompt**: wall time per question (model load excluded, embeddings
  cached across methods, so the first method pays the embedder warm-up).

Methods: ``gaap`` (the default: GAAP with WordNet synonyms of the sense that
fits, answer words protected, meaning-neutral frames; no model call),
``gaap-4pairs`` (the same with 4 crossovers a generation, the default
before 2026-12), ``gaap-words`` (the same without the frames), ``gaap-paper`` (the published
GAAP: any WordNet sense, hypernyms, hyponyms, deletion), ``gaap-model``
(GAAP with the SmolLM2 model lexicon: one call per question), ``paraphrase``
(SmolLM2 asked for 9 paraphrases: one call per question).

Run: ``.venv/bin/python benchmarks/perturbation.py [--data countries] [--limit N]
[--methods ...]``. ``--min-fidelity 0.5 0.75`` runs ``gaap-paper`` once per fidelity floor
(``gaap_min_fidelity``; on the ``(1 + cos) / 2`` scale, so 0.75 is cosine 0.5).
SmolLM2 is slow on two CPU cores; ``--model-limit`` caps the questions the
two SmolLM2 methods see (default: all of ``--limit``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from pathlib import Path

import numpy as np
from _common import NQ_OPEN_DEV

from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.records import load_questions
from uq_guard.perturb import (
    GAAPPerturber,
    ModelLexicon,
    ModelParaphraser,
    PerturbationResult,
    Perturber,
    WordNetLexicon,
)

HERE = Path(__file__).resolve().parent
DATA = {
    "nq": NQ_OPEN_DEV,
    "countries": HERE / "datasets" / "countries.jsonl",
    "arithmetic": HERE / "datasets" / "arithmetic.jsonl",
}
METHODS = ("gaap", "gaap-4pairs", "gaap-words", "gaap-paper", "gaap-model", "paraphrase")
MODEL_FREE = ("gaap", "gaap-4pairs", "gaap-words", "gaap-paper")
M = 9

_OPERATIONS = {
    "plus": r"plus|add(?:ed|ing)?|sum|\+",
    "minus": r"minus|subtract(?:ed|ing)?|less|take away|difference|-",
    "times": r"times|multipl(?:ied|y|ying)|product|×|\*|x",
    "divided by": r"divided|divide|over|quotient|÷|/",
}
_ARITHMETIC = re.compile(r"What is (\d+) (plus|minus|times|divided by) (\d+)\?")
_RELATION = re.compile(r"What is the (capital|currency) of (.+)\?")


def asks_the_same(question: str, variant: str) -> bool | None:
    """Whether ``variant`` still asks the templated ``question`` (None: not a templated one).

    See the module docstring for the rule.
    """
    found = _ARITHMETIC.fullmatch(question)
    if found:
        first, operation, second = found.groups()
        numbers = re.findall(r"\d+", variant)
        if numbers != [first, second]:
            return False
        return re.search(rf"(?<!\w)(?:{_OPERATIONS[operation]})(?!\w)", variant.lower()) is not None
    found = _RELATION.fullmatch(question)
    if found:
        relation, country = found.groups()
        lowered = variant.lower()
        has = re.search(rf"\b{relation}\b", lowered) is not None
        return has and country.lower() in lowered
    return None


def perturber_for(method: str, embedder, model, min_fidelity: float = 0.5) -> Perturber:
    if method == "gaap":
        return GAAPPerturber(embedder, WordNetLexicon(embedder=embedder, sense="context"))
    if method == "gaap-4pairs":
        lexicon = WordNetLexicon(embedder=embedder, sense="context")
        return GAAPPerturber(embedder, lexicon, pairs_per_generation=4)
    if method == "gaap-words":
        lexicon = WordNetLexicon(embedder=embedder, sense="context")
        return GAAPPerturber(embedder, lexicon, frames=False)
    if method == "gaap-paper":
        return GAAPPerturber(
            embedder, WordNetLexicon(), edits="paper", frames=False, min_fidelity=min_fidelity
        )
    if method == "gaap-model":
        return GAAPPerturber(embedder, ModelLexicon(model))
    return ModelParaphraser(model, temperature=0.7, max_tokens=48 * M + 64)


def quality(embedder, question: str, result: PerturbationResult) -> tuple[float, float, list]:
    """(mean fidelity, mean pairwise diversity, cosines to the original) of the real ones.

    NaN fidelity and diversity when there is none.
    """
    real = list(dict.fromkeys(result.prompts[: result.real_count]))
    if not real:
        return float("nan"), float("nan"), []
    vectors = embedder.encode([question, *real]).astype(np.float64)
    to_original = vectors[1:] @ vectors[0]
    fidelity = float(np.mean((1.0 + to_original) / 2.0))
    if len(real) < 2:
        return fidelity, 0.0, list(to_original)
    cosines = vectors[1:] @ vectors[1:].T
    pairs = np.triu_indices(len(real), k=1)
    return fidelity, float(np.mean(1.0 - cosines[pairs])), list(to_original)


class CountingTexts:
    """An embedder that counts the texts it is asked for (cache hits included)."""

    def __init__(self, inner) -> None:
        self.inner, self.texts = inner, 0

    def encode(self, texts):
        self.texts += len(texts)
        return self.inner.encode(texts)


async def bench(
    method: str, questions: list[str], embedder, model, min_fidelity: float = 0.5
) -> dict:
    counting = CountingTexts(embedder)
    perturber = perturber_for(method, counting, model, min_fidelity)
    fidelities, diversities, seconds, full, calls, cosines = [], [], [], 0, 0, []
    same: list[bool] = []
    for question in questions:
        started = time.perf_counter()
        result = await perturber.perturb(question, M)
        seconds.append(time.perf_counter() - started)
        for variant in dict.fromkeys(result.prompts[: result.real_count]):
            verdict = asks_the_same(question, variant)
            if verdict is not None:
                same.append(verdict)
        fidelity, diversity, to_original = quality(embedder, question, result)
        cosines += to_original
        if not np.isnan(fidelity):
            fidelities.append(fidelity)
            diversities.append(diversity)
        full += result.real_count == M and len(set(result.prompts)) == M
        calls += result.usage.model_calls
    if method == "gaap-paper" and min_fidelity != 0.5:
        method = f"{method}@{min_fidelity:g}"
    return {
        "method": method,
        "n": len(questions),
        "changed": 1.0 - statistics.fmean(same) if same else float("nan"),
        "n_variants": len(same),
        "fidelity": statistics.fmean(fidelities) if fidelities else float("nan"),
        "diversity": statistics.fmean(diversities) if diversities else float("nan"),
        "drift": float(np.mean(np.asarray(cosines) < 0.5)) if cosines else float("nan"),
        "full": full / len(questions),
        "s_per_prompt": statistics.fmean(seconds),
        "s_median": statistics.median(seconds),
        "calls_per_prompt": calls / len(questions),
        "texts": counting.texts / len(questions),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'method':<18} {'questions':>9} {'changed':>8} {'fidelity':>9} {'diversity':>9} "
        f"{'cos<0.5':>8} "
        f"{'full set':>9} {'texts':>6} {'s/prompt':>9} {'median s':>9} {'calls':>6}"
    )
    for row in rows:
        print(
            f"{row['method']:<18} {row['n']:>9} {row['changed']:>8.1%} {row['fidelity']:>9.3f} "
            f"{row['diversity']:>9.3f} "
            f"{row['drift']:>8.1%} {row['full']:>9.1%} {row['texts']:>6.1f} "
            f"{row['s_per_prompt']:>9.3f} "
            f"{row['s_median']:>9.3f} {row['calls_per_prompt']:>6.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="nq", help=f"question set ({', '.join(sorted(DATA))}) or a JSONL path"
    )
    parser.add_argument("--limit", type=int, default=200, help="questions (default 200)")
    parser.add_argument(
        "--model-limit", type=int, default=None, help="questions for the SmolLM2 methods"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--min-fidelity",
        type=float,
        nargs="+",
        default=[0.5],
        help="GAAP fidelity floors to compare (gaap-paper only; default 0.5)",
    )
    args = parser.parse_args()

    path = DATA.get(args.data, Path(args.data))
    questions = [item.question for item in load_questions(path, args.limit)]
    embedder = shared_embedder()
    embedder.encode(["warm up the embedder"])
    await GAAPPerturber(embedder, WordNetLexicon()).perturb("warm up the lexicon", 1)
    model = None
    if any(method not in MODEL_FREE for method in args.methods):
        from uq_guard_hf import HuggingFaceChatModel

        model = HuggingFaceChatModel.default(seed=0)
    rows = []
    for method in args.methods:
        subset = questions
        if method not in MODEL_FREE and args.model_limit is not None:
            subset = questions[: args.model_limit]
        floors = args.min_fidelity if method == "gaap-paper" else [0.5]
        for floor in floors:
            rows.append(await bench(method, subset, embedder, model, floor))
            print_table(rows[-1:])
    print(f"\nm = {M} perturbations per question; questions from {path.name}")
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
