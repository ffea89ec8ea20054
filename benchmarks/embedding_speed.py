"""Cheaper embeddings on CPU: each variant's speed and its ranking cost, in one run (issue 14).

**Speed.** The texts of one guarded call at 10 prompts × 5 samples with
128-token answers: the prompts of the first two NQ-Open records of the
committed default run, and 50 answers (plus the reply) made from that run's
answers, replies and questions, cut to exactly 128 MiniLM word pieces. Every
timed encode starts from an empty cache; the variants take turns within each
repeat (so a busy machine slows them alike) and the table gives medians and
ratios to the plain fp32 encode:

* ``fp32``: sentence-transformers on torch, the model's own limit (256 pieces);
* ``fp32, max_tokens=T``: texts cut to T word pieces (``embedding_max_tokens``);
* ``int8 ONNX``: ``embedding_backend="onnx-int8"`` (skipped without onnxruntime);
* cached: the same call again (every text a cache hit), and 4 concurrent
  calls through one embedder, with the same texts or with the same prompts
  and their own answers (each distinct text is encoded once).

**Ranking cost.** The committed records of the default runs are rescored
(``uq_guard.evaluation.runner.rescore``, no model call) with each variant's
embedder, and the AUROC of each record's label-free ``confidence`` against
its correctness is reported, with two embedding-based answer scores for
context (the default confidence compares answers by their words, so it reads
the embeddings through the prompts mainly).

    .venv/bin/python benchmarks/embedding_speed.py \\
        --out benchmarks/results/performance/embedding_speed.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import emit

from uq_guard.config_sections import ScoringSettings
from uq_guard.embeddings import SentenceTransformerEmbedder
from uq_guard.evaluation.metrics import auroc
from uq_guard.evaluation.records import EvalRecord, read_records
from uq_guard.evaluation.runner import rescore
from uq_guard.report import score_as_confidence

ROOT = Path(__file__).resolve().parent / "results" / "default"
N_PROMPTS, N_SAMPLES, ANSWER_TOKENS, CONCURRENT = 10, 5, 128, 4
DEFAULT_TOKENS = ScoringSettings.model_fields["embedding_max_tokens"].default
CONTEXT_SCORES = ("reply_agreement", "semantic_entropy")


def onnx_available() -> bool:
    """Whether onnxruntime and onnx are installed (the ``onnx`` extra)."""
    from uq_guard._onnx_embedding import missing_onnx_packages

    return not missing_onnx_packages()


def one_call_texts(records: list[EvalRecord], tokenizer) -> tuple[list[str], list[str]]:
    """10 prompts, and 5 answers each (and a reply) of 128 word pieces, from committed records."""
    prompts = list(dict.fromkeys(p for record in records for p in record.prompts))[:N_PROMPTS]
    pool = list(
        dict.fromkeys(
            t for r in records for t in [r.reply, *(a for g in r.samples for a in g), r.question]
        )
    )
    answers: list[str] = []
    for k in range(N_PROMPTS * N_SAMPLES + 1):  # the last one is the reply
        ids: list[int] = []
        start = k
        while len(ids) < ANSWER_TOKENS:
            ids += tokenizer(pool[start % len(pool)], add_special_tokens=False)["input_ids"]
            start += 7
        answers.append(tokenizer.decode(ids[:ANSWER_TOKENS]))
    return prompts, answers


def embedders(tokens: list[int]) -> dict[str, SentenceTransformerEmbedder]:
    """Each variant's own embedder, model loaded (outside every timing)."""
    found = {"fp32": SentenceTransformerEmbedder(device="cpu")}
    for limit in tokens:
        found[f"fp32, max_tokens={limit}"] = SentenceTransformerEmbedder(
            device="cpu", max_tokens=limit
        )
    if onnx_available():
        found["int8 ONNX"] = SentenceTransformerEmbedder(backend="onnx-int8")
        for limit in tokens:
            found[f"int8 ONNX, max_tokens={limit}"] = SentenceTransformerEmbedder(
                backend="onnx-int8", max_tokens=limit
            )
    for embedder in found.values():
        embedder.encode(["warm-up"])
        embedder.clear_cache()
    return found


def concurrently(embedder: SentenceTransformerEmbedder, calls: list[list[str]]) -> None:
    """Encode each text list in its own thread, all started together."""
    barrier = threading.Barrier(len(calls))

    def run(texts: list[str]) -> None:
        barrier.wait()
        embedder.encode(texts)

    threads = [threading.Thread(target=run, args=(texts,)) for texts in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def speed_rows(found: dict[str, SentenceTransformerEmbedder], texts: list[str], repeats: int):
    """(variant, median seconds per guarded call, texts encoded per call) for each variant."""
    base = found["fp32"]
    own_answers = [
        texts[:N_PROMPTS] + [f"{t} (call {c})" for t in texts[N_PROMPTS:]]
        for c in range(CONCURRENT)
    ]
    timed: dict[
        str, tuple[Callable[[], object], Callable[[], None], int, SentenceTransformerEmbedder]
    ]
    timed = {name: (lambda e=e: e.encode(texts), e.clear_cache, 1, e) for name, e in found.items()}
    timed["fp32, cached (same texts again)"] = (lambda: base.encode(texts), lambda: None, 1, base)
    timed[f"fp32, {CONCURRENT} concurrent calls, same texts"] = (
        lambda: concurrently(base, [texts] * CONCURRENT),
        base.clear_cache,
        CONCURRENT,
        base,
    )
    timed[f"fp32, {CONCURRENT} concurrent calls, same prompts, own answers"] = (
        lambda: concurrently(base, own_answers),
        base.clear_cache,
        CONCURRENT,
        base,
    )
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    encoded: dict[str, int] = {}
    for _ in range(repeats):
        for name, (run, before, calls, embedder) in timed.items():
            before()
            if "cached" in name:
                base.encode(texts)
            count = embedder.texts_encoded
            started = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - started) / calls)
            encoded[name] = (embedder.texts_encoded - count) // calls
    return [(name, statistics.median(s), encoded[name]) for name, s in seconds.items()]


def ranking_rows(
    found: dict[str, SentenceTransformerEmbedder],
    sets: list[str],
    limit: int | None,
    variants: list[str] | None = None,
):
    """(set, variant, AUROCs, rescore seconds) for each committed record set and variant.

    ``variants``: the names to rescore with (all when None; a rescore of one
    set takes minutes).
    """
    rows = []
    for name in sets:
        records = [r for r in read_records(ROOT / name / "records.jsonl") if r.ok][:limit]
        correct = np.array([bool(r.correct) for r in records])
        stored = np.array([r.confidence for r in records], dtype=float)
        rows.append((name, "stored records (as committed)", [auroc(stored, correct)], None))
        for variant, embedder in found.items():
            if variants is not None and variant not in variants:
                continue
            embedder.clear_cache()
            started = time.perf_counter()
            scored = rescore(records, embedder=embedder)
            took = time.perf_counter() - started
            values = [auroc(np.array([r.confidence for r in scored], dtype=float), correct)]
            for score in CONTEXT_SCORES:
                conf = [score_as_confidence(score, r.scores[score]) for r in scored]
                values.append(auroc(np.array(conf, dtype=float), correct))
            rows.append((name, variant, values, took))
            print(f"{name} {variant}: {values} in {took:.0f} s", file=sys.stderr, flush=True)
    return rows


def batch_drift(found: dict[str, SentenceTransformerEmbedder], texts: list[str]) -> str:
    """How far int8 rows move with their batch: a text alone against inside the call's batch.

    Zero since each text runs alone (dynamic quantisation would otherwise
    scale a batch's activations together).
    """
    embedder = found.get("int8 ONNX")
    if embedder is None:
        return ""
    together = embedder.model.encode(texts)
    alone = np.vstack([embedder.model.encode([t]) for t in texts])
    cosine = np.sum(together * alone, axis=1)
    return f"{1 - cosine.mean():.1e} mean, {1 - cosine.min():.1e} at most"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (median; ≥5)")
    parser.add_argument(
        "--tokens", default="128,64,32", help="embedding_max_tokens values to compare"
    )
    parser.add_argument("--sets", default="countries,nq", help="folders under results/default")
    parser.add_argument("--limit", type=int, default=None, help="records per set (all)")
    parser.add_argument(
        "--ranked",
        default=None,
        help="';'-separated variants to rescore the records with (default: every variant)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()

    tokens = [int(t) for t in args.tokens.split(",") if t]
    found = embedders(tokens)
    tokenizer = found["fp32"].model.tokenizer
    prompts, answers = one_call_texts(read_records(ROOT / "nq" / "records.jsonl")[:10], tokenizer)
    texts = list(dict.fromkeys([*prompts, *answers]))
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    speed = speed_rows(found, texts, args.repeats)
    ranked = [v.strip() for v in args.ranked.split(";")] if args.ranked else None
    unknown = sorted(set(ranked or ()) - set(found))
    if unknown:
        parser.error(f"--ranked: no variant {unknown}; the variants are {sorted(found)}")
    ranking = ranking_rows(found, args.sets.split(","), args.limit, ranked)

    base = speed[0][1]
    lines = [
        "# Embedding speed and ranking cost (issue 14, part 1)",
        "",
        f"Command: `.venv/bin/python {shlex.join(sys.argv)}`",
        "",
        f"One guarded call's texts: {len(prompts)} prompts and {len(answers) - 1} answers plus "
        f"the reply of {min(lengths)}–{max(lengths)} word pieces each ({len(texts)} distinct "
        f"texts). Median of {args.repeats} repeats per variant, taking turns; default "
        f"`embedding_max_tokens` = {DEFAULT_TOKENS}.",
        "",
        "| variant | seconds per call | × fp32 | texts encoded per call |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {s:.3f} | {s / base:.2f} | {c} |" for n, s, c in speed),
        "",
        "Ranking cost: AUROC of the label-free `confidence` after rescoring the committed "
        "records with each variant (no model call), and of two embedding-based answer "
        "scores for context.",
        "",
        f"| set | variant | confidence | {' | '.join(CONTEXT_SCORES)} | rescore s |",
        "|---|---|---:|" + "---:|" * len(CONTEXT_SCORES) + "---:|",
    ]
    for name, variant, values, took in ranking:
        cells = [f"{v:.4f}" for v in values] + ["–"] * (1 + len(CONTEXT_SCORES) - len(values))
        lines.append(
            f"| {name} | {variant} | {' | '.join(cells)} | "
            f"{'–' if took is None else f'{took:.0f}'} |"
        )
    drift = batch_drift(found, texts)
    if drift:
        lines += [
            "",
            f"int8 rows move with their batch (1 − cosine, alone vs in the call): {drift}.",
        ]
    else:
        lines += ["", "int8 ONNX: skipped, onnxruntime or onnx is not installed."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
