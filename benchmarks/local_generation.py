"""The bundled SmolLM2 on CPU: transformers' batched ``generate`` against llama.cpp.

Three measurements, every variant interleaved in one run (the machine may be
shared: compare the ratios, and the CPU seconds beside the wall seconds):

1. **One round of generation** of a guarded call at the library defaults:
   the reply (greedy, with token statistics, at most ``--reply-tokens``) and
   10 prompts × 5 samples at T=0.7, ``max_tokens=32``, as one
   ``Backend.generate``. The prompts are NQ-Open questions under the shipped
   calibration's system prompt. Variants, for each of ``--threads``:
   transformers (the ``HuggingFaceChatModel`` of ``engine="transformers"``,
   torch's intra-op threads set to the count) and llama.cpp on the GGUF
   dequantised to float16 (``LlamaCppChatModel.default()``, every sequence
   of a group decoded together); then llama.cpp on it dequantised to
   float32, on the Q4_1 GGUF itself (other numbers, see 2.) and
   llama.cpp sequential (one ``llama_cpp.Llama.create_chat_completion`` per
   answer, its prompt cache reusing the prefix; one round, it is slow).
2. **Same inputs to the scorers**: greedy replies (64 tokens at most) to
   ``--questions-parity`` questions with their token entropies, llama.cpp on
   the float16, float32 and Q4_1 GGUF against transformers (float32): identical
   replies, and over those the per-token entropy gaps and the gap in
   ``mean_token_entropy`` (the shipped calibration's feature).
3. **The full guarded call** (``uq_guard.guard(model).ainvoke``) at the
   bundled model's defaults (its shipped calibration and the settings it
   was fitted under) and at the library defaults, on ``--questions-call``
   NQ-Open questions, per backend: seconds per question.

    .venv/bin/python benchmarks/local_generation.py --threads 1 \\
        --out benchmarks/results/performance/local_generation.md

``--threads all,1`` adds both engines' default (every CPU); on a machine
shared with other busy processes its threads spin waiting for each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import NQ_OPEN_DEV, emit, table_lines
from uq_guard_hf import HuggingFaceChatModel, LlamaCppChatModel
from uq_guard_hf.provision import default_model_path, smollm2_gguf_path

import uq_guard
from uq_guard import GuardConfig, UncertaintyReport
from uq_guard._cpus import usable_cpus
from uq_guard.backend import GenerationRequest
from uq_guard.evaluation.records import load_questions

SYSTEM = "Answer in a few words."


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """transformers' intra-op threads set to ``count`` for the block (None: untouched)."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_seconds() -> float:
    """CPU seconds of this process, every thread (spin-waiting included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def conversation(question: str) -> tuple[dict[str, str], ...]:
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": question})


def round_requests(questions: list[str], config: GuardConfig) -> list[GenerationRequest]:
    """The reply and every prompt's samples, as one guarded call asks for them."""
    prompts = questions[: config.n_perturbations + 1]
    return [
        GenerationRequest(messages=conversation(prompts[0]), want_logprobs=True),
        *(
            GenerationRequest(
                messages=conversation(prompt),
                n=config.n_samples,
                temperature=config.temperature,
                max_tokens=config.max_tokens,
            )
            for prompt in prompts
        ),
    ]


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    gc.collect()
    cpu, wall = cpu_seconds(), time.perf_counter()
    call()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


Variants = dict[str, tuple[Any, int | None]]
"""name -> (model, transformers' thread count for its calls; None for llama.cpp)."""


def measure_rounds(
    models: Variants, sequential: Any, questions: list[str], repeats: int
) -> list[list[str]]:
    config = GuardConfig()
    requests = round_requests(questions, config)
    walls: dict[str, list[float]] = {name: [] for name in [*models, "llama.cpp sequential"]}
    cpus: dict[str, list[float]] = {name: [] for name in walls}
    tokens: dict[str, int] = {}
    warm_up = [
        GenerationRequest(messages=conversation(questions[0]), n=2, temperature=0.7, max_tokens=4)
    ]
    for model, count in models.values():
        with torch_threads(count):
            asyncio.run(model.generate(warm_up))
    for repeat in range(repeats):
        for name, (model, count) in models.items():
            generations: list[Any] = []

            def run(
                model: Any = model, count: int | None = count, out: list[Any] = generations
            ) -> None:
                with torch_threads(count):
                    out.extend(asyncio.run(model.generate(requests)))

            wall, cpu = timed(run)
            failed = [g.error for g in generations if g.error is not None]
            if failed:
                raise RuntimeError(f"{name}: {failed[0]!r}")
            walls[name].append(wall)
            cpus[name].append(cpu)
            tokens[name] = sum(g.usage.completion_tokens for g in generations)
            print(f"round {repeat} {name}: {wall:.2f} s (cpu {cpu:.2f})", file=sys.stderr)
        if repeat == 0:
            wall, cpu = timed(lambda: sequential_round(sequential, requests, tokens))
            walls["llama.cpp sequential"].append(wall)
            cpus["llama.cpp sequential"].append(cpu)
            print(f"round 0 sequential: {wall:.2f} s (cpu {cpu:.2f})", file=sys.stderr)
    baseline = statistics.median(walls[next(iter(models))])
    return [
        [
            name,
            cell(walls[name]),
            cell(cpus[name]),
            f"{baseline / statistics.median(walls[name]):.1f}×",
            str(tokens.get(name, "-")),
            str(len(walls[name])),
        ]
        for name in walls
    ]


def sequential_round(llama: Any, requests: list[GenerationRequest], tokens: dict[str, int]) -> None:
    """Every answer of the round through ``create_chat_completion``, one at a time.

    Without token statistics: ``logprobs=True`` needs a ``Llama`` built with
    ``logits_all=True`` and gives the top-k log-probabilities only, no entropy.
    """
    spent = 0
    for request in requests:
        for _ in range(request.n):
            completion = llama.create_chat_completion(
                messages=list(request.messages),
                max_tokens=request.max_tokens or 256,
                temperature=request.temperature or 0.0,
                top_k=0,
                top_p=1.0,
                min_p=0.0,
                repeat_penalty=1.0,
            )
            spent += completion["usage"]["completion_tokens"]
    tokens["llama.cpp sequential"] = spent


def measure_parity(models: Variants, questions: list[str]) -> list[list[str]]:
    requests = [
        GenerationRequest(messages=conversation(q), want_logprobs=True, max_tokens=64)
        for q in questions
    ]
    answers = {}
    for name, (model, count) in models.items():
        with torch_threads(count):
            answers[name] = asyncio.run(model.generate(requests))
    reference_name = next(iter(models))
    reference = answers[reference_name]
    rows = []
    for name, generations in answers.items():
        if name == reference_name:
            continue
        same, token_gaps, mean_gaps = 0, [], []
        for ours, theirs in zip(generations, reference, strict=True):
            if ours.texts[0] != theirs.texts[0]:
                continue
            same += 1
            a, b = ours.token_entropies[0], theirs.token_entropies[0]
            token_gaps.extend(abs(x - y) for x, y in zip(a, b, strict=True))
            mean_gaps.append(abs(float(np.mean(a or [0.0])) - float(np.mean(b or [0.0]))))
        rows.append(
            [
                name,
                f"{same}/{len(requests)}",
                f"{max(token_gaps):.4f}" if token_gaps else "-",
                f"{float(np.median(token_gaps)):.5f}" if token_gaps else "-",
                f"{max(mean_gaps):.4f}" if mean_gaps else "-",
            ]
        )
    return rows


def measure_calls(
    models: Variants, questions: list[str], library_defaults: bool
) -> list[list[str]]:
    settings: dict[str, Any] = {}
    if library_defaults:
        config = GuardConfig()
        settings = {
            "n_perturbations": config.n_perturbations,
            "n_samples": config.n_samples,
            "max_tokens": config.max_tokens,
        }
    guarded = {name: uq_guard.guard(model, **settings) for name, (model, _) in models.items()}
    for name, wrapper in guarded.items():  # warm: WordNet, the embedder, first-call set-up
        with torch_threads(models[name][1]):
            asyncio.run(wrapper.ainvoke("What is the capital of France?"))
    walls: dict[str, list[float]] = {name: [] for name in guarded}
    generate: dict[str, list[float]] = {name: [] for name in guarded}
    confidences: dict[str, list[float]] = {name: [] for name in guarded}
    for question in questions:
        for name, wrapper in guarded.items():
            with torch_threads(models[name][1]):
                started = time.perf_counter()
                message = asyncio.run(wrapper.ainvoke(question))
                walls[name].append(time.perf_counter() - started)
            report = UncertaintyReport.model_validate(message.response_metadata["uq_guard"])
            generate[name].append(report.timings_ms.get("generate", 0.0) / 1000)
            if report.confidence is not None:
                confidences[name].append(report.confidence)
            print(f"call {name}: {walls[name][-1]:.2f} s", file=sys.stderr)
    return [
        [
            name,
            cell(walls[name]),
            f"{max(walls[name]):.2f}",
            cell(generate[name]),
            f"{statistics.mean(confidences[name]):.3f}" if confidences[name] else "-",
            str(len(walls[name])),
        ]
        for name in guarded
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per variant (median)")
    parser.add_argument("--questions-parity", type=int, default=30)
    parser.add_argument("--questions-call", type=int, default=5)
    parser.add_argument(
        "--reply-tokens", type=int, default=256, help="the reply's max_tokens (model default)"
    )
    parser.add_argument(
        "--threads",
        default="all,1",
        help="CPU thread counts to compare, comma-separated ('all': every CPU, the default "
        "of both engines); the first is used for the Q4_1, sequential and parity rows",
    )
    parser.add_argument("--skip-calls", action="store_true", help="rounds and parity only")
    parser.add_argument("--data", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args()

    import llama_cpp

    wanted = 10 + args.questions_parity + args.questions_call
    questions = [item.question + "?" for item in load_questions(args.data, wanted)]
    round_questions = questions[:10]
    parity_questions = questions[10 : 10 + args.questions_parity]
    call_questions = questions[10 + args.questions_parity :]

    common = {"seed": 0, "max_new_tokens": args.reply_tokens}
    every = usable_cpus()
    counts = [every if part == "all" else int(part) for part in args.threads.split(",")]
    transformers = HuggingFaceChatModel.default(engine="transformers", **common)
    transformers_variants: Variants = {}
    llama_variants: Variants = {}
    for count in counts:
        label = f"{count} thread{'s' if count > 1 else ''}"
        transformers_variants[f"transformers, batched generate, {label}"] = (transformers, count)
        llama_variants[f"llama.cpp F16 (the default), batched, {label}"] = (
            LlamaCppChatModel.default(n_threads=count, **common),
            None,
        )
    float32 = LlamaCppChatModel.default(n_threads=counts[0], dtype="float32", **common)
    quantised = LlamaCppChatModel.from_gguf(
        smollm2_gguf_path(), tokenizer=default_model_path(), n_threads=counts[0], **common
    )
    first = f"{counts[0]} thread{'s' if counts[0] > 1 else ''}"
    models: Variants = {
        **transformers_variants,
        **llama_variants,
        f"llama.cpp F32, batched, {first}": (float32, None),
        f"llama.cpp Q4_1 (other numbers), batched, {first}": (quantised, None),
    }
    first_llama = next(iter(llama_variants.values()))[0]
    sequential = llama_cpp.Llama(
        first_llama.gguf_path, n_ctx=2048, n_threads=counts[0], verbose=False, seed=0
    )

    round_rows = measure_rounds(models, sequential, round_questions, args.repeats)
    del sequential
    parity_models: Variants = {
        "transformers": (transformers, counts[0]),
        "llama.cpp F16 (the default)": (first_llama, None),
        "llama.cpp F32": (float32, None),
        "llama.cpp Q4_1": (quantised, None),
    }
    parity_rows = measure_parity(parity_models, parity_questions)
    config = GuardConfig()
    shipped = transformers.guard_defaults
    lines = [
        "# The bundled SmolLM2-135M-Instruct on CPU: transformers against llama.cpp",
        "",
        "Produced by:",
        "",
        "```",
        " ".join([".venv/bin/python benchmarks/local_generation.py", *sys.argv[1:]]),
        "```",
        "",
        f"## One round: the reply + {config.n_perturbations + 1} prompts × "
        f"{config.n_samples} samples (T={config.temperature}, max_tokens={config.max_tokens})",
        "",
        f"Medians of {args.repeats} rounds, variants interleaved in one run (sequential: one "
        f"round, `Llama.create_chat_completion` per answer, no token statistics). `cpu s`: "
        f"CPU seconds of all threads. Reply cap {args.reply_tokens} tokens. "
        f"`speed-up`: against the first row.",
        "",
        *table_lines(["variant", "wall s", "cpu s", "speed-up", "tokens", "rounds"], round_rows),
        "",
        f"## Same inputs to the scorers: greedy replies to {args.questions_parity} questions",
        "",
        "Against transformers, over the replies that are identical: per-token "
        "entropy gaps |ΔH| (nats) and the gap in their mean_token_entropy.",
        "",
        *table_lines(
            [
                "variant",
                "identical replies",
                "max per-token |ΔH|",
                "median per-token |ΔH|",
                "max |Δ mean_token_entropy|",
            ],
            parity_rows,
        ),
    ]
    if not args.skip_calls:
        callers: Variants = {
            name.replace(", batched generate", "")
            .replace(", batched", "")
            .replace(" (the default)", ""): variant
            for name, variant in {**transformers_variants, **llama_variants}.items()
        }
        header = ["backend", "median s", "max s", "generate s", "mean confidence", "calls"]
        shipped_rows = measure_calls(callers, call_questions, library_defaults=False)
        library_rows = measure_calls(callers, call_questions, library_defaults=True)
        lines += [
            "",
            f"## The full guarded call, {args.questions_call} NQ-Open questions",
            "",
            "`uq_guard.guard(model).ainvoke(question)`, reply cap "
            f"{args.reply_tokens} tokens; after one warm-up call each. `generate s`: the "
            "report's own generation time.",
            "",
            f"At the bundled model's defaults ({shipped.get('n_perturbations')} perturbations "
            f"× {shipped.get('n_samples')} samples, max_tokens={shipped.get('max_tokens')}, "
            "its shipped calibration):",
            "",
            *table_lines(header, shipped_rows),
            "",
            f"At the library defaults ({config.n_perturbations} perturbations × "
            f"{config.n_samples} samples, max_tokens={config.max_tokens}):",
            "",
            *table_lines(header, library_rows),
        ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
