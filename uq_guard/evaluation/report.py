"""The eval report: one table row per scoring method, in Markdown and HTML, plus PNG plots.

Orientation: every score in a record is an uncertainty (higher = less sure)
except those in :data:`uq_guard.report.CONFIDENCE_LIKE_SCORES`; the table
turns each into a confidence the same way (negating uncertainties) before any
metric, so AUROC > 0.5 always means "the method ranks right answers above
wrong ones". ``guard_confidence`` is the confidence the guard itself
reported. A metric with no value on the data (AUROC when every answer is
right; ECE of a score that is not a probability) is shown as a note, never NaN.
When too few answers are right, or wrong, for the intervals to mean anything
(:func:`~uq_guard.evaluation.metrics.class_balance_warning`: fewer than
:data:`~uq_guard.evaluation.metrics.MIN_CLASS_ANSWERS`), the report opens
with a warning saying so (:func:`run_warnings`). What a method is and its
confidence per record come from :mod:`uq_guard.evaluation.methods` (re-exported
here), which the plots read too.
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uq_guard._exceptions import ConfigurationError
from uq_guard.evaluation.methods import (
    GUARD_CONFIDENCE,
    LABEL_FREE_CONFIDENCE,
    MethodRow,
    confidence_of,
    method_signal,
)
from uq_guard.evaluation.metrics import METRICS, MetricSummary, class_balance_warning, evaluate
from uq_guard.evaluation.records import EvalRecord
from uq_guard.evaluation.tsu import TSUResult, tsu
from uq_guard.scoring.verbalized import VERBALIZED_SCORE
from uq_guard.scoring.whitebox import WHITEBOX_SCORES

__all__ = [
    "GUARD_CONFIDENCE",
    "LABEL_FREE_CONFIDENCE",
    "MethodRow",
    "confidence_of",
    "method_rows",
    "method_signal",
    "run_warnings",
    "tsu_by_method",
    "tsu_markdown",
    "write_report",
    "write_tsu",
]

BRIER_FOLDS = 5  # the isotonic Brier score's cross-fitting folds
X0_SAMPLE_SCORES = frozenset(
    {
        "degree",
        "eigv",
        "eccentricity",
        "semantic_entropy",
        "semantic_volume",
        "reply_agreement",
    }
)
_COLUMNS = (("auroc", "AUROC"), ("prr", "PRR"), ("brier", "Brier (iso)"), ("ece", "ECE"))
_COLUMNS = (*_COLUMNS, ("aurac", "AURAC"))
_UNDEFINED_SHORT = {"confidence is not in [0, 1]": "n/a: not a probability"}


def tsu_by_method(runs: Mapping[float, Sequence[EvalRecord]]) -> dict[str, TSUResult]:
    """TSU (ALGORITHMS.md §5) of every method, from one eval run per temperature.

    Args:
        runs: records by sampling temperature; the same questions at each
            (matched by ``id``; a question missing or failed at any
            temperature, or without the method's value, is left out of that
            method).

    Returns:
        per method, best chain share first. The white-box scores read the
        greedy reply alone, which no temperature changes: their uncertainty
        ties at every step, so their TSU is 0 by construction.

    Raises:
        ConfigurationError: fewer than two temperatures.
    """
    temperatures = sorted(runs)
    if len(temperatures) < 2:
        raise ConfigurationError(f"TSU needs runs at two temperatures or more, got {temperatures}")
    by_id = [{r.id: r for r in runs[t] if r.ok} for t in temperatures]
    shared = [i for i in by_id[0] if all(i in run for run in by_id[1:])]
    methods = _methods([run[i] for run in by_id for i in shared])
    results = {}
    for method in methods:
        rows = [[confidence_of(run[i], method) for run in by_id] for i in shared]
        rows = [row for row in rows if None not in row]
        if rows:
            results[method] = tsu(-np.asarray(rows, dtype=float), temperatures)
    return dict(sorted(results.items(), key=lambda item: item[1].chain, reverse=True))


# scores that read nothing a temperature changes: they tie at every step, so their TSU is 0
CONSTANT_IN_TEMPERATURE = {
    **dict.fromkeys(sorted(WHITEBOX_SCORES), "greedy reply only"),
    "prompt_semantic_volume": "prompts only",
}


def tsu_markdown(results: Mapping[str, TSUResult], *, title: str = "TSU") -> str:
    """A Markdown table of :func:`tsu_by_method`: the chain share, then each adjacent step's."""
    if not results:
        raise ConfigurationError("no method has a value at every temperature")
    temps = next(iter(results.values())).temperatures
    steps = list(itertools.pairwise(temps))
    lines = [
        f"{title} (T in {', '.join(f'{t:g}' for t in temps)}; share of questions whose "
        "uncertainty rises strictly)",
        "",
        "| method | every step | " + " | ".join(f"{a:g}→{b:g}" for a, b in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for method, result in results.items():
        why = CONSTANT_IN_TEMPERATURE.get(method)
        name = f"{method} ({why}: constant in T)" if why else method
        cells = [f"{result.chain:.3f} ({result.n_chain}/{result.n_questions})"]
        cells += [f"{result.pairs[step]:.3f}" for step in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tsu(results: Mapping[str, TSUResult], out_dir: str | Path, *, title: str = "TSU") -> Path:
    """Write ``tsu.md`` (the table) and ``tsu.json`` (every share) to ``out_dir``.

    Returns:
        the path of ``tsu.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {method: result.as_dict() for method, result in results.items()}
    (out / "tsu.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    path = out / "tsu.md"
    path.write_text(tsu_markdown(results, title=title), encoding="utf-8")
    return path


def _methods(records: Sequence[EvalRecord]) -> list[str]:
    names = dict.fromkeys(name for record in records for name in record.scores)
    if any(record.confidence is not None for record in records):
        names = {GUARD_CONFIDENCE: None, **names}
        if any(record.calibrated for record in records):
            names = {GUARD_CONFIDENCE: None, LABEL_FREE_CONFIDENCE: None, **names}
    return list(names)


def _needs(method: str) -> str:
    if method == VERBALIZED_SCORE:
        return "reply + 1 call"
    if method in WHITEBOX_SCORES:
        return "reply"
    if method in X0_SAMPLE_SCORES:
        return "x0 samples"
    return "all"


def method_rows(
    records: Sequence[EvalRecord], *, n_resamples: int = 1000, seed: int = 0
) -> list[MethodRow]:
    """Evaluate every method found in ``records`` (failed records left out), best AUROC first."""
    done = [r for r in records if r.ok]
    if not done:
        return []
    calls = float(np.mean([r.model_calls + r.reused_requests for r in done]))
    seconds = float(np.mean([r.seconds for r in done]))
    n_prompts = float(np.mean([max(1, len(r.prompts)) for r in done]))
    rows = []
    for method in _methods(done):
        conf, correct = method_signal(done, method)
        if conf.size == 0:
            continue
        needs = _needs(method)
        # the white-box scores need the reply alone; the x0 baselines one prompt's samples
        cost = {
            "reply": 1.0,
            "reply + 1 call": 2.0,
            "x0 samples": 1.0 + (calls - 1.0) / n_prompts,
        }.get(needs, calls)
        rows.append(
            MethodRow(
                method=method,
                summary=_evaluate(conf, correct, n_resamples=n_resamples, seed=seed),
                needs=needs,
                calls_per_question=min(cost, calls),
                seconds_per_question=seconds,
                n_missing=len(done) - conf.size,
            )
        )
    return sorted(rows, key=_auroc_key, reverse=True)


def _evaluate(conf: np.ndarray, correct: np.ndarray, **options: Any) -> MetricSummary:
    if conf.size >= BRIER_FOLDS:
        return evaluate(conf, correct, **options)
    summary = evaluate(conf, correct, metrics=tuple(m for m in METRICS if m != "brier"), **options)
    summary.undefined["brier"] = (
        f"{BRIER_FOLDS}-fold cross-fitting needs at least {BRIER_FOLDS} questions, got {conf.size}"
    )
    return summary


def _auroc_key(row: MethodRow) -> float:
    interval = row.summary.metrics.get("auroc")
    return interval.estimate if interval is not None else -1.0


def _cell(row: MethodRow, metric: str) -> str:
    interval = row.summary.metrics.get(metric)
    if interval is None:
        why = row.summary.undefined.get(metric, "not computed")
        return _UNDEFINED_SHORT.get(why, "undefined†")
    return str(interval)


def _table(rows: Sequence[MethodRow]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "n", *(title for _, title in _COLUMNS), "needs", "calls/q", "s/q"]
    body = [
        [
            row.method,
            str(row.summary.n),
            *(_cell(row, metric) for metric, _ in _COLUMNS),
            row.needs,
            f"{row.calls_per_question:.1f}",
            f"{row.seconds_per_question:.2f}",
        ]
        for row in rows
    ]
    return header, body


def _undefined_notes(rows: Sequence[MethodRow]) -> list[str]:
    notes = []
    for row in rows:
        for metric, why in row.summary.undefined.items():
            if why not in _UNDEFINED_SHORT:
                notes.append(f"† {row.method} {metric}: {why}")
        if row.n_missing:
            notes.append(f"{row.method}: no value on {row.n_missing} question(s), left out")
    return notes


def run_warnings(records: Sequence[EvalRecord]) -> list[str]:
    """Why a run's metrics should not be trusted: too few right or wrong answers, if so.

    Counts the answered records (failed ones are left out, as in the table).
    """
    done = [r for r in records if r.ok]
    warning = class_balance_warning(sum(bool(r.correct) for r in done), len(done))
    return [] if warning is None else [warning]


def write_report(
    records: Sequence[EvalRecord],
    out_dir: str | Path,
    *,
    title: str = "uq_guard evaluation",
    command: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and (with matplotlib) the PNG plots into ``out_dir``.

    Args:
        records: the run's records.
        out_dir: the folder (created).
        title: the report's heading.
        command: the command that produced the run, quoted in the report.
        n_resamples: bootstrap resamples of each interval.
        seed: bootstrap seed.
        plots: draw the PNGs (needs matplotlib, the ``eval`` extra).

    Returns:
        the paths written, by name (``markdown``, ``html``, and each plot's name).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = method_rows(records, n_resamples=n_resamples, seed=seed)
    done = [r for r in records if r.ok]
    failed = len(records) - len(done)
    accuracy = float(np.mean([r.correct for r in done])) if done else float("nan")
    rules: dict[str, int] = {}
    for record in done:
        rules[record.correctness_rule] = rules.get(record.correctness_rule, 0) + 1

    facts = [
        f"questions: {len(records)} ({len(done)} answered, {failed} failed)",
        f"accuracy of the reply: {accuracy:.3f}" if done else "accuracy: no answered question",
        "correctness rules: " + ", ".join(f"{k} {v}" for k, v in sorted(rules.items())),
    ]
    if done:
        facts.append(
            f"model calls per question: {np.mean([r.model_calls for r in done]):.1f} "
            f"(+{np.mean([r.reused_requests for r in done]):.1f} reused from another run); "
            f"seconds per question: {np.mean([r.seconds for r in done]):.2f}"
        )
    header, body = _table(rows)
    warnings = run_warnings(records)
    notes = _undefined_notes(rows)
    if not warnings:  # a method with many missing values may fall short on its own
        notes += [f"{row.method}: {w}" for row in rows for w in row.summary.warnings]
    if done and rows and all(not row.summary.metrics.get("auroc") for row in rows):
        notes.insert(0, "every answer is right or every answer is wrong: no method can be ranked")

    written = {}
    images: list[tuple[str, str]] = []
    if plots and rows:
        from uq_guard.evaluation.plots import draw_plots

        for name, path in draw_plots(done, rows, out).items():
            written[name] = path
            images.append((name, path.name))

    legend = (
        "Scores are turned into confidences before every metric (uncertainties negated), so "
        "higher AUROC/PRR/AURAC and lower Brier/ECE are better. Brier is after a cross-fitted "
        "isotonic map; ECE (15 equal-mass bins) needs a score in [0, 1]. Intervals: 95% "
        f"percentile bootstrap over questions ({n_resamples} resamples). `needs`: what the "
        "method uses (the reply's token log-probabilities; the reply and one more call asking "
        "the model how sure it is; the samples of the question; all the prompts); calls/q is "
        "the model calls that part of the run cost per question."
    )
    md = [f"# {title}", ""]
    md += [f"> **Warning: {warning}.**\n" for warning in warnings]
    if command:
        md += ["Produced by:", "", "```", command, "```", ""]
    md += [f"* {fact}" for fact in facts] + ["", legend, ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cells) + " |" for cells in body]
    if notes:
        md += ["", "Notes:", ""] + [f"* {note}" for note in notes]
    if images:
        md += [""] + [f"![{name}]({file})" for name, file in images]
    written["markdown"] = out / "report.md"
    written["markdown"].write_text("\n".join(md) + "\n", encoding="utf-8")

    esc = html.escape
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child{text-align:left}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    page += [
        "<p style='border:2px solid #c00;padding:8px;background:#fee'>"
        f"<strong>Warning: {esc(warning)}.</strong></p>"
        for warning in warnings
    ]
    if command:
        page.append(f"<pre>{esc(command)}</pre>")
    page.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in facts) + "</ul>")
    page.append(f"<p>{esc(legend)}</p><table><tr>")
    page.append("".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    page += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body]
    page.append("</table>")
    if notes:
        page.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    page += [f"<h3>{esc(name)}</h3><img src='{esc(file)}'>" for name, file in images]
    page.append("</body></html>")
    written["html"] = out / "report.html"
    written["html"].write_text("\n".join(page) + "\n", encoding="utf-8")
    return written
