"""``uq-guard serve``: build the upstream and the app from command-line settings, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard_server.app import ServerSettings, create_app
from uq_guard_server.upstream import LocalUpstream, OpenAIUpstream, Upstream

logger = logging.getLogger(__name__)

LOCAL = "local"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options."""
    parser.add_argument(
        "--upstream",
        default=LOCAL,
        help="an OpenAI-compatible base URL (e.g. https://api.openai.com/v1), "
        "or 'local' for the local SmolLM2 model (default)",
    )
    parser.add_argument(
        "--upstream-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the upstream's API key (default OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--api-key-env",
        default="UQ_GUARD_API_KEY",
        help="environment variable holding the key clients must send; "
        "no check when it is unset (default UQ_GUARD_API_KEY)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model", action="append", dest="models", help="a model name to serve (repeatable)"
    )
    parser.add_argument("--fallback-model", help="the upstream model policy=fallback asks")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000)
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GuardConfig setting, e.g. --set policy=abstain --set threshold=0.4 (JSON values)",
    )


def guard_config(pairs: list[str]) -> GuardConfig:
    """``KEY=VALUE`` pairs as a GuardConfig (values parsed as JSON when they can be).

    Raises:
        ConfigurationError: a pair without ``=`` or a bad setting.
    """
    import json

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigurationError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return GuardConfig(**settings)


def build_upstream(args: argparse.Namespace, config: GuardConfig) -> Upstream:
    """The upstream the options name."""
    if args.upstream == LOCAL:
        from uq_guard_hf import HuggingFaceChatModel

        names = args.models or [LOCAL_MODEL_NAME]
        options = {"device": config.device} if config.device else {}
        return LocalUpstream(HuggingFaceChatModel.default(**options), names[0])
    return OpenAIUpstream(
        args.upstream,
        api_key=os.environ.get(args.upstream_key_env),
        timeout_s=config.timeout_s or 120.0,
        models=args.models,
        fallback_model=args.fallback_model,
    )


def run(args: argparse.Namespace) -> int:
    """Start the proxy and serve until interrupted; returns the exit status."""
    import uvicorn

    config = guard_config(args.set)
    settings = ServerSettings(
        guard=config,
        api_key=os.environ.get(args.api_key_env) or None,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
    )
    app = create_app(build_upstream(args, config), settings)
    logger.info(
        "serving %s on http://%s:%d (client key check %s)",
        args.upstream,
        args.host,
        args.port,
        "on" if settings.api_key else "off",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
