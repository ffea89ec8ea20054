"""How long must the samples be? AUROC of the guard's confidence against the samples' length.

Takes eval runs (``uq-guard eval`` folders, e.g. ``benchmarks/results/default/countries``
and ``.../nq``), cuts every stored sample to its first K words, rescores the
records from the stored texts (:func:`uq_guard.evaluation.runner.rescore`, no
model call) and reports the AUROC of the label-free ``confidence`` with a 95 %
bootstrap interval, per cap and per set; ``--stops`` adds a row per stop
sequence, each sample cut before its first occurrence as a server would.
The reply is never cut: the product gives it its own length, and only the
samples are capped (``GuardConfig.max_tokens``).

The committed runs sampled at ``max_tokens=24`` (tokens), so no stored sample
has more than 24 words and the 24-word row is the run as it was scored; caps
above 24 tokens cannot be measured from these records. Each set is scored
under the records' own similarity and under the guard's default
(``answer_words``), since both read the samples differently (embeddings of
the whole text against the answers' content words). ``max_tokens`` counts
tokens, so each cap's samples are also measured in tokens of the tokenizer of
the model that drew them (``--tokenizer``; by default the bundled SmolLM2's,
when provisioned).

    .venv/bin/python benchmarks/sample_length.py benchmarks/results/default/countries \\
        benchmarks/results/default/nq --out benchmarks/results/performance/sample_length.md
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _common import auroc_cell, emit

from uq_guard import GuardConfig
from uq_guard.evaluation.metrics import auroc
from uq_guard.evaluation.records import EvalRecord, read_records
from uq_guard.evaluation.runner import rescore

DEFAULT_CAPS = (8, 12, 16, 24)
_WORD = re.compile(r"\S+")


def first_words(text: str, k: int) -> str:
    """``text`` up to the end of its ``k``-th word (whitespace-separated), as it was written."""
    for count, match in enumerate(_WORD.finditer(text), start=1):
        if count == k:
            return text[: match.end()]
    return text


def before_stop(text: str, stop: str) -> str:
    """``text`` up to its first ``stop`` (excluded), as a model server stops on it."""
    return text.split(stop, 1)[0]


def cut_samples(
    records: Sequence[EvalRecord], cut: Callable[[str], str]
) -> tuple[list[EvalRecord], float]:
    """The records with every sample passed through ``cut``, and the share of samples cut."""
    cut_count = total = 0
    out = []
    for record in records:
        samples = [[cut(s) for s in answers] for answers in record.samples]
        cut_count += sum(
            a != b
            for old, new in zip(record.samples, samples, strict=True)
            for a, b in zip(old, new, strict=True)
        )
        total += sum(len(a) for a in record.samples)
        out.append(record.model_copy(update={"samples": samples}))
    return out, cut_count / max(1, total)


def word_lengths(records: Sequence[EvalRecord]) -> np.ndarray:
    """Words of every stored sample."""
    return np.array(
        [len(s.split()) for r in records for answers in r.samples for s in answers], dtype=float
    )


def token_counter(path: str | None) -> Callable[[str], int] | None:
    """Counts tokens under the tokenizer at ``path`` (default: the bundled SmolLM2's); or None."""
    try:
        from transformers import AutoTokenizer

        if path is None:
            from uq_guard._paths import cache_root

            folder = cache_root() / "models" / "smollm2-135m-instruct"
            if not (folder / "tokenizer.json").is_file():
                return None
            path = str(folder)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # a benchmark without a tokenizer still reports words
        print(f"no tokenizer ({exc}): caps in words only", file=sys.stderr)
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_cell(records: Sequence[EvalRecord], count: Callable[[str], int] | None) -> str:
    """Median, 90th percentile and mean of the samples' tokens: ``19 / 24 / 17.2``; ``-`` without
    a tokenizer."""
    if count is None:
        return "-"
    tokens = [count(s) for r in records for answers in r.samples for s in answers]
    return f"{np.median(tokens):.0f} / {np.percentile(tokens, 90):.0f} / {np.mean(tokens):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="eval run folders (records.jsonl)")
    parser.add_argument(
        "--caps",
        default=",".join(map(str, DEFAULT_CAPS)),
        help="comma-separated caps in words (default: %(default)s)",
    )
    parser.add_argument(
        "--similarity",
        action="append",
        help="similarity to rescore under (repeatable; default: the records' own and "
        "the guard's default)",
    )
    parser.add_argument(
        "--stops",
        default="",
        help="comma-separated stop sequences, each a row of its own (Python escapes: "
        "'\\n\\n,\\n'); default: none",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--tokenizer", help="tokenizer of the model that drew the samples (default: SmolLM2's)"
    )
    parser.add_argument("--limit", type=int, help="the first N records of each run only")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    caps = sorted({int(c) for c in args.caps.split(",") if c.strip()})
    stops = [
        stop.encode().decode("unicode_escape") for stop in args.stops.split(",") if stop.strip()
    ]
    cuts: list[tuple[str, Callable[[str], str]]] = [
        (f"first {k} words", lambda text, k=k: first_words(text, k)) for k in caps
    ]
    cuts += [
        (f"stop at {stop!r}", lambda text, stop=stop: before_stop(text, stop)) for stop in stops
    ]
    cuts.append(("none (as drawn)", lambda text: text))
    count_tokens = token_counter(args.tokenizer)

    lines = [
        "# Sample length: AUROC of the guard's confidence against the samples' cap",
        "",
        "Produced by:",
        "",
        "```",
        shlex.join(["benchmarks/sample_length.py", *sys.argv[1:]]),
        "```",
        "",
        "Every stored sample cut to its first K words, or before the first occurrence of a "
        "stop sequence as a model server stops on it, the reply left whole, the records "
        "rescored from their texts (`rescore`, no model call); AUROC of `confidence` "
        f"(label-free, §2.9) with a 95 % bootstrap interval ({args.bootstrap} resamples). "
        "`Δ` is the point AUROC minus that of the samples as drawn (the runs sampled at "
        "24 tokens). `tokens`: median / 90th percentile / mean of the cut samples' length "
        "in tokens of the model that drew them.",
        "",
    ]
    for run in args.runs:
        records = [r for r in read_records(run / "records.jsonl") if r.ok and r.prompts]
        records = records[: args.limit] if args.limit else records
        correct = np.array([bool(r.correct) for r in records])
        lengths = word_lengths(records)
        own = sorted({str(r.scoring.get("similarity")) for r in records})
        similarities = args.similarity or [*own, GuardConfig().similarity]
        similarities = list(dict.fromkeys(str(s) for s in similarities))
        lines += [
            f"## {run}",
            "",
            f"{len(records)} questions, {int(correct.sum())} right, {int((~correct).sum())} "
            f"wrong; samples per question {int(lengths.size / max(1, len(records)))}; words "
            f"per sample: median {np.median(lengths):.0f}, 90th percentile "
            f"{np.percentile(lengths, 90):.0f}, max {lengths.max():.0f}; the records' own "
            f"similarity: {', '.join(own)}.",
            "",
            "| similarity | samples cut to | tokens | samples cut | AUROC of confidence | Δ |",
            "|---|---|---|---|---|---|",
        ]
        for similarity in similarities:
            rows = []
            for label, cut in cuts:
                cut_records, share = cut_samples(records, cut)
                scored = rescore(cut_records, similarity=similarity)
                conf = np.array([np.nan if r.confidence is None else r.confidence for r in scored])
                known = np.isfinite(conf)
                point = auroc(conf[known], correct[known])
                cell = auroc_cell(conf, correct, n_resamples=args.bootstrap)
                rows.append((label, token_cell(cut_records, count_tokens), share, cell, point))
            drawn = rows[-1][4]
            for label, tokens, share, cell, point in rows:
                lines.append(
                    f"| {similarity} | {label} | {tokens} | {share:.1%} | {cell} "
                    f"| {point - drawn:+.3f} |"
                )
            print(f"done {run} {similarity}", file=sys.stderr)
        lines.append("")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
