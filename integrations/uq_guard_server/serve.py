"""``uq-guard serve``: build the upstream and the app from command-line settings, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard_server.app import ServerSettings, create_app
from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS, ServerPolicy
from uq_guard_server.redact import RedactingFilter, redact_url
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
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        help="seconds before a request gets 504 and its work is cancelled (default 300)",
    )
    parser.add_argument(
        "--allow-setting",
        action="append",
        dest="allowed_settings",
        metavar="NAME",
        help="a per-request uq_guard setting clients may send (repeatable; replaces the "
        f"default list {', '.join(DEFAULT_ALLOWED_SETTINGS)}; 'none' allows none)",
    )
    policy = ServerPolicy()
    parser.add_argument(
        "--max-upstream-calls",
        type=int,
        default=policy.max_upstream_calls,
        help="upstream chat calls one request may cause, retries included "
        f"(default {policy.max_upstream_calls})",
    )
    parser.add_argument(
        "--max-request-tokens",
        type=int,
        default=policy.max_request_tokens,
        help="completion tokens one request may ask for, reply and samples summed "
        f"(default {policy.max_request_tokens})",
    )
    parser.add_argument(
        "--max-request-concurrency",
        type=int,
        default=policy.max_request_concurrency,
        help="upstream calls of one request in flight at once "
        f"(default {policy.max_request_concurrency})",
    )
    parser.add_argument(
        "--max-perturb-chars",
        type=int,
        default=policy.max_perturb_chars,
        help="a longer prompt is not perturbed, only sampled, with a note in the "
        f"x-uq-guard-note header (default {policy.max_perturb_chars})",
    )
    parser.add_argument(
        "--max-active-requests",
        type=int,
        default=8,
        help="chat requests worked on at once (default 8)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="chat requests waiting for a slot; beyond, 503 with Retry-After (default 16)",
    )
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


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The proxy's settings from the options.

    Raises:
        ConfigurationError: a bad ``--set``, allow-list or cap.
    """
    allowed = args.allowed_settings
    if allowed is not None:
        allowed = [name for name in allowed if name.lower() != "none"]
    policy = ServerPolicy.allowing(
        allowed,
        max_upstream_calls=args.max_upstream_calls,
        max_request_tokens=args.max_request_tokens,
        max_request_concurrency=args.max_request_concurrency,
        max_perturb_chars=args.max_perturb_chars,
    )
    return ServerSettings(
        guard=guard_config(args.set),
        policy=policy,
        api_key=os.environ.get(args.api_key_env) or None,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        max_active_requests=args.max_active_requests,
        max_queue=args.max_queue,
        upstream_key=os.environ.get(args.upstream_key_env) or None,
    )


def run(args: argparse.Namespace) -> int:
    """Start the proxy and serve until interrupted; returns the exit status."""
    import sys

    import uvicorn

    try:
        settings = server_settings(args)
    except ConfigurationError as exc:
        print(f"uq-guard serve: {exc}", file=sys.stderr)
        return 2
    # Whatever logs (ours, httpx, uvicorn), no credential reaches a log line.
    redacting = RedactingFilter([settings.api_key, settings.upstream_key])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
    app = create_app(build_upstream(args, settings.guard), settings)
    logger.info(
        "serving %s on http://%s:%d (client key check %s)",
        redact_url(args.upstream),
        args.host,
        args.port,
        "on" if settings.api_key else "off",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
