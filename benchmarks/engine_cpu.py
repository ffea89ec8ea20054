"""The engine's own CPU time per guarded call, against a plain encode of the same texts.

One guarded call at the default settings (GAAP with WordNet, 10 prompts × 5
samples, the bundled MiniLM, every scorer) on a backend that answers at once
with canned answers of about 128 word pieces, so only the engine's own work is
timed: perturbation, embedding, scoring, deciding. Every call asks a new
NQ-Open question and starts with a cold embedding cache, as a chat turn does.

The baseline, timed in the same run, interleaved with the calls: a plain fp32
sentence-transformers ``encode`` of the same distinct texts (the call's
prompts, answers and reply) at the model's own length limit. Rows: the
default embedder (``auto``: int8 ONNX on CPU, ``embedding_max_tokens=64``)
and the fp32 torch one at the same limit. Then GAAP alone on prompts of 20,
450 and 2000 words (how prompt size bounds its work).

Run: ``.venv/bin/python benchmarks/engine_cpu.py [--calls 8] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from _common import NQ_OPEN_DEV, emit

from uq_guard import Guard, GuardConfig
from uq_guard._sync import run_sync
from uq_guard.backend import Generation, GenerationRequest, Usage
from uq_guard.embeddings import SentenceTransformerEmbedder
from uq_guard.evaluation.records import load_questions

#: Words in a canned answer: about 128 of MiniLM's word pieces.
ANSWER_WORDS = 96
#: Prompt lengths (words) GAAP is timed on alone.
PROMPT_WORDS = (20, 450, 2000)


class CannedBackend:
    """Answers every request at once with long, distinct, on-topic answers."""

    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = list(pool)
        self.served = 0
        self.texts: list[str] = []  # every prompt asked and answer given since the last reset

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            question = request.messages[-1]["content"]
            texts = []
            for _ in range(request.n):
                start = (self.served * 37) % len(self.pool)
                words = (self.pool * 2)[start : start + ANSWER_WORDS - len(question.split())]
                texts.append(f"{question} The answer is {' '.join(words)}.")
                self.served += 1
            self.texts.extend([question, *texts])
            out.append(Generation(texts=texts, usage=Usage(model_calls=1)))
        return out


def cpu_seconds(run) -> tuple[float, object]:
    started = time.process_time()
    result = run()
    return time.process_time() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="guarded calls per variant")
    parser.add_argument("--data", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()

    questions = [item.question + "?" for item in load_questions(args.data, 4 * args.calls + 1)]
    pool = " ".join(questions).split()
    variants = {
        "default (auto: int8 ONNX on CPU, 64 tokens)": GuardConfig(),
        "torch fp32, 64 tokens": GuardConfig(embedding_backend="torch"),
    }
    guards = {}
    for name, config in variants.items():
        backend = CannedBackend(pool)
        embedder = SentenceTransformerEmbedder(
            config.embedding_model,
            device="cpu",
            max_tokens=config.embedding_max_tokens,
            backend=config.embedding_backend,
        )
        guards[name] = (Guard(backend, config, embedder=embedder), backend, embedder)
    plain = SentenceTransformerEmbedder(device="cpu")
    warm = questions[0]
    for guard, _, _ in guards.values():
        guard.run(warm)  # loads the models and WordNet outside the timings
    plain.encode([warm])

    seconds: dict[str, list[float]] = {name: [] for name in guards}
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in guards}
    baseline: list[float] = []
    texts_per_call: list[int] = []
    for call in range(args.calls):
        for offset, (name, (guard, backend, embedder)) in enumerate(guards.items()):
            question = questions[1 + call * len(guards) + offset]
            embedder.clear_cache()
            backend.texts = []
            spent, result = cpu_seconds(lambda g=guard, q=question: g.run(q))
            seconds[name].append(spent)
            parts[name].append(dict(result.report.timings_ms))
            if offset == 0:
                distinct = list(dict.fromkeys([question, *backend.texts]))
                texts_per_call.append(len(distinct))
                plain.clear_cache()
                spent_plain, _ = cpu_seconds(lambda d=distinct: plain.encode(d))
                baseline.append(spent_plain)

    base = statistics.median(baseline)
    lines = [
        "# Engine CPU per guarded call against a plain fp32 encode of the same texts",
        "",
        "Produced by:",
        "",
        "```",
        f"benchmarks/engine_cpu.py --calls {args.calls}"
        + (f" --out {args.out}" if args.out else ""),
        "```",
        "",
        f"{args.calls} guarded calls per row, a new NQ-Open question each, cold embedding "
        f"cache; 10 prompts × 5 answers of about 128 word pieces; "
        f"{statistics.median(texts_per_call):.0f} distinct texts a call. CPU seconds "
        "(process time, both cores counted), medians; `perturb` and `score` (embedding "
        "included) are the report's own wall-clock timings (ms, medians).",
        "",
        "| engine | CPU s per call | × plain encode | perturb ms | score ms |",
        "|---|---|---|---|---|",
        f"| plain fp32 encode of the same texts (baseline) | {base:.3f} | 1.00× | - | - |",
    ]
    for name in guards:
        cpu = statistics.median(seconds[name])

        def part(key: str, name: str = name) -> str:
            values = [timings.get(key) for timings in parts[name]]
            values = [value for value in values if value is not None]
            return f"{statistics.median(values):.0f}" if values else "-"

        lines.append(
            f"| {name} | {cpu:.3f} | {cpu / base:.2f}× | {part('perturb')} | {part('score')} |"
        )
    guard = next(iter(guards.values()))[0]
    lines += [
        "",
        "GAAP alone on long prompts (the default guard's perturber, m = 9, a new prompt "
        "each: NQ-Open questions run together):",
        "",
        "| prompt words | perturb wall s | perturb CPU s |",
        "|---|---|---|",
    ]
    for start, words in enumerate(PROMPT_WORDS):
        prompt = " ".join((pool * 20)[start * 7 : start * 7 + words]) + " What is the answer?"
        began = time.perf_counter()
        spent, _ = cpu_seconds(lambda p=prompt: run_sync(guard.perturber.perturb(p, 9)))
        lines.append(f"| {words} | {time.perf_counter() - began:.2f} | {spent:.2f} |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
