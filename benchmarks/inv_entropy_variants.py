"""What Inv-Entropy's ranking depends on: rescoring one eval run's texts under variants.

No model call: the prompts, samples and replies stored in an eval run's
``records.jsonl`` are embedded again (MiniLM) and scored under each variant,
and each variant's AUROC against the run's correctness is printed with a 95 %
bootstrap interval. Variants:

* ``inv_entropy`` and its label-free confidence (ALGORITHMS §2.9) under
  ``answer_words`` (the default: answers compared by their content words,
  prompts by shifted cosine), ``shifted_cosine`` and ``abs_cosine``, with the
  bootstrap (B = 30, the default) and without it (B = 0: all answers at once);
* ``reported confidence answer_words``: what the guard reports on the
  Inv-Entropy path, the mean of that confidence and the reply's word support;
* ``distinct prompts``: Inv-Entropy with ``S_X`` the identity between
  distinct prompts, i.e. with the prompt graph's geometry taken out (not an
  option of the guard: it shows how much of the score is the prompts' layout);
* ``prompt spread``: minus the mean cosine between the prompts, no answer
  involved (how well the prompts' layout alone ranks the questions);
* ``answer agreement``: the mean cosine between all sampled answers.

    .venv/bin/python benchmarks/inv_entropy_variants.py benchmarks/results/default/countries
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import auroc_cell, emit

from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.records import read_records
from uq_guard.scoring.answer_words import answer_word_similarity
from uq_guard.scoring.inv_entropy import inv_entropy
from uq_guard.scoring.suite import score_samples

SIMILARITIES = {
    "shifted_cosine": (lambda cosine: (1.0 + cosine) / 2.0, 0.5),
    "abs_cosine": (np.abs, 0.0),
}


def variants(record, embedder) -> dict[str, float]:
    """Every variant's confidence (higher = surer) for one record."""
    groups = [k for k, answers in enumerate(record.samples) for _ in answers]
    answers = [a for group in record.samples for a in group]
    prompt_vectors = embedder.encode(record.prompts).astype(np.float64)
    answer_vectors = embedder.encode(answers).astype(np.float64)
    prompt_cos = np.clip(prompt_vectors @ prompt_vectors.T, -1.0, 1.0)
    answer_cos = np.clip(answer_vectors @ answer_vectors.T, -1.0, 1.0)
    pair_cos = prompt_cos[np.ix_(groups, groups)]
    words = answer_word_similarity(answers, record.prompts[0])
    found: dict[str, float] = {}
    for draws in (30, 0):
        result = inv_entropy(
            (1.0 + pair_cos) / 2.0, words, groups=groups, n_bootstrap=draws, seed=0
        )
        found[f"inv_entropy answer_words B={draws}"] = -result.inv_entropy
        found[f"confidence answer_words B={draws}"] = result.confidence
    reported = score_samples(
        embedder=embedder, prompts=record.prompts, answers=record.samples, reply=record.reply
    )
    found["reported confidence answer_words"] = reported.confidence
    for name, (kernel, unrelated) in SIMILARITIES.items():
        for draws in (30, 0):
            result = inv_entropy(
                kernel(pair_cos),
                kernel(answer_cos),
                groups=groups,
                n_bootstrap=draws,
                seed=0,
                unrelated_similarity=unrelated,
            )
            found[f"inv_entropy {name} B={draws}"] = -result.inv_entropy
            found[f"confidence {name} B={draws}"] = result.confidence
    same_prompt = (np.asarray(groups)[:, None] == np.asarray(groups)[None, :]).astype(float)
    distinct = inv_entropy(
        same_prompt, (1.0 + answer_cos) / 2.0, groups=groups, n_bootstrap=30, seed=0
    )
    found["inv_entropy, distinct prompts"] = -distinct.inv_entropy
    upper = np.triu_indices(len(record.prompts), k=1)
    found["prompt spread (no answers)"] = -float(prompt_cos[upper].mean())
    off_diagonal = ~np.eye(len(answers), dtype=bool)
    found["answer agreement"] = float(answer_cos[off_diagonal].mean())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an eval run folder")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()

    records = [r for r in read_records(args.run / "records.jsonl") if r.ok and r.samples]
    embedder = shared_embedder()
    rows = [variants(record, embedder) for record in records]
    correct = np.array([bool(r.correct) for r in records])
    lines = [
        f"{len(records)} questions of {args.run}: {int(correct.sum())} right, "
        f"{int((~correct).sum())} wrong",
        "",
        "| variant | AUROC |",
        "|---|---|",
    ]
    for name in rows[0]:
        values = [row[name] for row in rows]
        lines.append(f"| {name} | {auroc_cell(values, correct, args.bootstrap)} |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
