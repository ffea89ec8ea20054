"""``uq-guard eval``: run a model over labelled questions, write the records and the report.

This module prints (it is the CLI); the library parts it calls do not.

::

    uq-guard eval --data nq_open_dev.jsonl --model local --out runs/nq --limit 100 \\
        --n-perturbations 4 --n-samples 3 --max-tokens 24 --system "Answer in a few words."
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError

__all__ = ["DEFAULT_REPLY_MAX_TOKENS", "EVAL_DEFAULTS", "add_eval_arguments", "run_eval_command"]


#: Sampling settings of a model that carries no guard defaults of its own.
EVAL_DEFAULTS = {"n_perturbations": 4, "n_samples": 3, "max_tokens": 32}

#: The reply's default cap: what ``HuggingFaceChatModel.default()`` (the product's
#: local model) generates by default, so a reply is graded at the length a user reads.
DEFAULT_REPLY_MAX_TOKENS = 256


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uq-guard eval``."""
    parser.add_argument("--data", required=True, help="question/answer JSONL or hf:NAME[:SPLIT]")
    parser.add_argument(
        "--model",
        default="local",
        help="'local' (SmolLM2-135M-Instruct), 'openai:URL[#model]', or 'py:module:attr'",
    )
    parser.add_argument("--out", required=True, help="folder for records.jsonl and the report")
    parser.add_argument("--limit", type=int, help="first N questions only")
    parser.add_argument(
        "--n-perturbations",
        type=int,
        help="perturbed prompts m (default: the model's guard defaults, else "
        f"{EVAL_DEFAULTS['n_perturbations']})",
    )
    parser.add_argument(
        "--n-samples",
        type=int,
        help="answers per prompt (default: the model's guard defaults, else "
        f"{EVAL_DEFAULTS['n_samples']})",
    )
    parser.add_argument(
        "--perturbation", choices=("gaap", "paraphrase", "gaap+paraphrase", "none"), default="gaap"
    )
    parser.add_argument(
        "--max-tokens",
        "--sample-max-tokens",
        dest="max_tokens",
        type=int,
        help="cap on each sampled answer (GuardConfig.max_tokens); may be below the reply's "
        f"(default: the model's guard defaults, else {EVAL_DEFAULTS['max_tokens']})",
    )
    parser.add_argument(
        "--calibration",
        default="auto",
        metavar="auto|none|PATH",
        help="the calibration the guard applies, so guard_confidence is what the product "
        "reports: 'auto' (default) = the one the model ships (the local SmolLM2's), else none; "
        "the label-free confidence is reported beside it",
    )
    parser.add_argument(
        "--reply-max-tokens",
        type=int,
        default=DEFAULT_REPLY_MAX_TOKENS,
        help="cap on the reply that is graded, the product's reply length "
        f"(default {DEFAULT_REPLY_MAX_TOKENS}, the local model's own)",
    )
    parser.add_argument(
        "--system",
        metavar="TEXT",
        help='a system message sent with every question and perturbation, e.g. "Answer in a '
        'few words." (recorded; a resumed run must use the same)',
    )
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        metavar="T",
        help="run at each temperature (in --out/T<t>) and report TSU, e.g. 0.3 0.7 1.0 1.4",
    )
    parser.add_argument(
        "--adaptive", action="store_true", help="adaptive sampling (stop early on agreement)"
    )
    parser.add_argument(
        "--verbalized",
        action="store_true",
        help="also ask the model how sure it is (one more call a question)",
    )
    parser.add_argument(
        "--judge",
        metavar="MODEL",
        help="a grader model (same forms as --model) asked yes/no when neither exact match "
        "nor containment matched; the records say which rule decided",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any GuardConfig setting by name, e.g. --set gaap_min_fidelity=0.75 (JSON values, "
        "else text; repeatable); wins over the option of the same setting (e.g. --n-samples). "
        "policy and include_samples are the eval's own (annotate, kept)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, help="questions in flight (default: 1 local, 4)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of each interval")
    parser.add_argument("--title", help="the report's heading")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars at all (this command's, and those of model loading and downloads)",
    )
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots")


def run_eval_command(args: argparse.Namespace) -> int:
    """Run ``uq-guard eval``; returns the exit status.

    With ``--no-progress`` no progress bar is drawn, not even by the libraries it calls
    (see :func:`_progress_bars_off`).
    """
    if not args.no_progress:
        return _run_eval(args)
    with _progress_bars_off():
        return _run_eval(args)


@contextlib.contextmanager
def _progress_bars_off() -> Iterator[None]:
    """Every tqdm bar created meanwhile is created disabled; undone on exit.

    The libraries an eval loads draw their own bars: transformers while it
    dequantises a GGUF model, huggingface_hub while it downloads, each a tqdm
    (sub)class. tqdm reads its ``TQDM_DISABLE`` default only when first
    imported, so the switch is made on the class itself for the command's duration.
    """
    try:
        from tqdm import std
    except ImportError:  # no tqdm: no bars to silence
        yield
        return
    descriptor = std.tqdm.__dict__["__init__"]
    original = std.tqdm.__init__
    names = list(inspect.signature(original).parameters)
    position = names.index("disable") - 1 if "disable" in names else None  # after self

    def disabled(self: Any, *args: Any, **kwargs: Any) -> None:
        if position is not None and len(args) > position:
            args = (*args[:position], True, *args[position + 1 :])
        else:
            kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = disabled  # type: ignore[method-assign]
    try:
        yield
    finally:
        std.tqdm.__init__ = descriptor  # type: ignore[method-assign]


def _run_eval(args: argparse.Namespace) -> int:
    from uq_guard.cli_settings import apply_settings
    from uq_guard.config import GuardConfig
    from uq_guard.evaluation.judge import ModelJudge
    from uq_guard.evaluation.records import load_questions
    from uq_guard.evaluation.report import run_warnings, tsu_by_method, write_report, write_tsu
    from uq_guard.evaluation.runner import (
        make_backend,
        run_eval,
        run_temperatures,
        temperature_folder,
    )

    overrides = _guard_settings(args.set)  # a typo fails before any question or model loads
    items = load_questions(args.data, args.limit)
    transport = GuardConfig.build(
        None, **{k: v for k, v in overrides.items() if k in ("max_concurrency", "timeout_s")}
    )
    local = args.model == "local"
    concurrency = args.concurrency or (1 if local else 4)
    backend = make_backend(
        args.model,
        max_tokens=args.reply_max_tokens,
        seed=args.seed,
        max_concurrency=transport.max_concurrency,
        timeout_s=transport.timeout_s,
    )
    config = GuardConfig(
        **_sampling_settings(args, getattr(backend, "guard_defaults", None) or {}),
        perturbation=args.perturbation,
        temperature=args.temperature,
        seed=args.seed,
        adaptive=args.adaptive,
        verbalized_confidence=args.verbalized,
    )
    config = apply_settings(config, overrides)
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:
            print("no progress bar: pip install 'uq-guard[eval]'", file=sys.stderr)
        else:
            total = len(items) * max(1, len(args.temperatures or ()))
            bar = tqdm(total=total, desc="eval", unit="q", dynamic_ncols=True)

    def on_record(record) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(correct=int(record.correct), calls=record.model_calls)

    folders = {t: temperature_folder(args.out, t) for t in args.temperatures or ()}
    if bar is not None:
        from uq_guard.evaluation.records import read_records

        for folder in folders.values() or [Path(args.out)]:
            already = {r.id for r in read_records(folder / "records.jsonl") if r.ok}
            bar.update(sum(1 for item in items if item.id in already))
    judge = ModelJudge(make_backend(args.judge, max_tokens=8)) if args.judge else None
    options = {
        "model_name": args.model,
        "concurrency": concurrency,
        "on_record": on_record,
        "judge": judge,
        "system": args.system,
        "reply_max_tokens": args.reply_max_tokens,
    }
    try:
        if folders:
            runs = run_temperatures(
                items, backend, config, list(folders), out_dir=args.out, **options
            )
        else:
            run = run_eval(items, backend, config, out_dir=args.out, **options)
            runs = {config.temperature: run}
    finally:
        if bar is not None:
            bar.close()
    command = "uq-guard " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not sys.argv[1:] or sys.argv[1] != "eval":
        command = _reconstruct(args)
    title = args.title or f"uq_guard eval: {Path(args.data).name} with {args.model}"
    for temperature, run in runs.items():
        paths = write_report(
            run.records,
            folders.get(temperature, args.out),
            title=f"{title} (T={temperature:g})" if folders else title,
            command=command,
            n_resamples=args.bootstrap,
            seed=args.seed,
            plots=not args.no_plots,
        )
        print(
            f"{len(run.records)} questions ({run.n_new} new, {run.n_resumed} resumed, "
            f"{run.n_failed} failed) -> {run.records_path}"
        )
        if not folders:
            print(_table_of(paths["markdown"]))
        for warning in run_warnings(run.records):
            print(f"WARNING: {warning}.")
        print(f"report: {paths['markdown']} and {paths['html']}")
    if judge is not None:
        print(
            f"judge {args.judge}: {judge.n_asked} asked, "
            f"{judge.n_unreadable} said neither yes nor no"
        )
    if folders:
        results = tsu_by_method({t: run.records for t, run in runs.items()})
        path = write_tsu(results, args.out, title=f"TSU: {Path(args.data).name} with {args.model}")
        print(path.read_text(encoding="utf-8"), end="")
        print(f"TSU: {path}")
    return 0


def _sampling_settings(args: argparse.Namespace, model_defaults: dict[str, Any]) -> dict[str, Any]:
    """The run's budget and calibration: the flags given, else the model's guard defaults.

    A model that ships a calibration (``HuggingFaceChatModel.default()``)
    carries the sampling budget it was fitted under; evaluating it as the
    product runs means those, unless a flag says otherwise. Without them, a
    calibration fitted under other settings would be applied off its scale.
    """
    settings = {
        key: getattr(args, key)
        if getattr(args, key) is not None
        else model_defaults.get(key, default)
        for key, default in EVAL_DEFAULTS.items()
    }
    if args.calibration == "auto":
        settings["calibration"] = model_defaults.get("calibration")
    elif args.calibration != "none":
        settings["calibration"] = args.calibration
    return settings


def _guard_settings(pairs: list[str] | None) -> dict[str, Any]:
    """The ``--set`` settings; refused for what every eval run fixes itself.

    Raises:
        ConfigurationError: a bad pair, an unknown name, or ``policy`` /
            ``include_samples`` (an eval annotates and keeps the samples).
    """
    from uq_guard.cli_settings import parse_settings

    settings = parse_settings(pairs or [])
    fixed = sorted(set(settings) & {"policy", "include_samples"})
    if fixed:
        raise ConfigurationError(
            f"--set {', '.join(fixed)}: an eval run always uses policy 'annotate' and keeps the "
            "samples (include_samples); set the others"
        )
    return settings


def _reconstruct(args: argparse.Namespace) -> str:
    parts = ["uq-guard eval"]
    for key, value in sorted(vars(args).items()):
        if key in ("run", "command", "verbose") or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "set":  # repeated, one pair each
            parts.extend(f"{flag} {shlex.quote(pair)}" for pair in value)
            continue
        values = value if isinstance(value, list) else [value]
        parts.append(
            flag if value is True else " ".join([flag, *(shlex.quote(str(v)) for v in values)])
        )
    return " ".join(parts)


def _table_of(markdown: Path) -> str:
    lines = markdown.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))
