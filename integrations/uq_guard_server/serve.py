"""``uq-guard serve``: build the upstream and the app from command-line settings, run uvicorn.

``--workers N`` (N > 1) runs N uvicorn worker processes on one port, each a
stateless replica: it builds its own upstream, Guard and app from the same
options, handed over in the :data:`OPTIONS_ENV` environment variable as JSON
(:func:`options_to_json`; the options as typed, which name the environment
variables holding the keys, never a key). Caps and limits hold per worker.
On Linux each worker listens on a socket of its own, so that the kernel
spreads connections (:mod:`uq_guard_server.workers`), and a worker above
its share of the requests in flight closes connections after answering
until they are spread evenly (:mod:`uq_guard_server.balance`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard.cli_settings import apply_settings, parse_settings
from uq_guard_server.app import ServerSettings, create_app, default_active_requests
from uq_guard_server.balance import RebalancingMiddleware
from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS, ServerPolicy
from uq_guard_server.redact import RedactingFilter, redact_url
from uq_guard_server.upstream import LocalUpstream, OpenAIUpstream, Upstream
from uq_guard_server.workers import (
    balances_connections,
    reserve_address,
    run_supervised,
    share_embedding_threads,
    worker_slot,
)

logger = logging.getLogger(__name__)

LOCAL = "local"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
OPTIONS_ENV = "UQ_GUARD_SERVE_OPTIONS"
"""Where ``uq-guard serve --workers N`` hands its options to the worker processes."""
APP_FACTORY = "uq_guard_server.serve:app_from_environment"
"""The import string each worker process builds its app with."""
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"  # uq_guard.cli's, set again in each worker


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
        "--workers",
        type=int,
        default=1,
        help="worker processes on the port, stateless replicas, each with its own upstream, "
        "guard, embedder and limits (default 1); over --upstream local each loads its own "
        "copy of the model",
    )
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
        help="upstream calls in flight at once for one request; a worker has at most this "
        f"times --max-active-requests in flight (default {policy.max_request_concurrency})",
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
        help="chat requests worked on at once (default: one a CPU core, at least 2)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=0,
        help="chat requests waiting for a slot; beyond, 503 with Retry-After (default 0)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GuardConfig setting, e.g. --set policy=abstain --set threshold=0.4 (JSON values)",
    )


def guard_config(pairs: list[str], defaults: Mapping[str, Any] | None = None) -> GuardConfig:
    """``KEY=VALUE`` pairs as a GuardConfig (values parsed as JSON when they can be).

    Args:
        pairs: the operator's ``--set`` options; each wins over ``defaults``
            (``calibration=null`` turns a shipped calibration off).
        defaults: settings to start from, e.g. a local model's ``guard_defaults``
            (its calibration and the sampling settings it was fitted with).

    Raises:
        ConfigurationError: a pair without ``=``, a name that is no setting, or a bad value.
    """
    return apply_settings(defaults, parse_settings(pairs))


def model_guard_defaults(upstream: Upstream) -> dict[str, Any]:
    """The guard settings a local upstream's model ships with (``{}`` for any other upstream)."""
    defaults = getattr(getattr(upstream, "model", None), "guard_defaults", None)
    return dict(defaults) if isinstance(defaults, Mapping) else {}


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


def server_settings(
    args: argparse.Namespace, guard_defaults: Mapping[str, Any] | None = None
) -> ServerSettings:
    """The proxy's settings from the options.

    Args:
        args: the parsed options.
        guard_defaults: guard settings under the ``--set`` ones (see :func:`guard_config`).

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
        guard=guard_config(args.set, guard_defaults),
        policy=policy,
        api_key=os.environ.get(args.api_key_env) or None,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        max_active_requests=args.max_active_requests or default_active_requests(),
        max_queue=args.max_queue,
        upstream_key=os.environ.get(args.upstream_key_env) or None,
    )


def build(args: argparse.Namespace) -> tuple[Upstream, ServerSettings]:
    """The upstream and the proxy's settings the options describe.

    Over ``--upstream local`` the guard starts from the local model's
    ``guard_defaults`` (the calibration fitted for it and the sampling
    settings it was fitted with); every ``--set`` wins over them.

    Raises:
        ConfigurationError: a bad option (found before any model is loaded), or
            a model's defaults over the server's caps.
    """
    settings = server_settings(args)
    upstream = build_upstream(args, settings.guard)
    defaults = model_guard_defaults(upstream)
    if defaults:
        settings = server_settings(args, defaults)
        shown = {k: v for k, v in defaults.items() if k in GuardConfig.model_fields}
        logger.info("the local model's guard defaults apply under --set: %s", shown)
    return upstream, settings


def run(args: argparse.Namespace) -> int:
    """Start the proxy and serve until interrupted; returns the exit status."""
    import uvicorn

    workers = getattr(args, "workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        print(
            f"uq-guard serve: --workers must be a whole number >= 1, got {workers!r}",
            file=sys.stderr,
        )
        return 2
    try:  # before any worker starts: each gets its share of the CPUs for embedding
        share_embedding_threads(workers)
    except ConfigurationError as exc:
        print(f"uq-guard serve: {exc}", file=sys.stderr)
        return 2
    # Whatever logs (ours, httpx, openai, uvicorn), no credential reaches a log line.
    secrets = _secrets(args)
    install_redaction(secrets)
    if workers > 1:
        return _run_workers(args, workers)
    try:
        upstream, settings = build(args)
    except ConfigurationError as exc:
        print(f"uq-guard serve: {exc}", file=sys.stderr)
        return 2
    app = create_app(upstream, settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    install_redaction(secrets)  # uvicorn's own handlers exist now
    _log_serving(args, settings)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 1  # not started: the port was taken, or startup failed


def _run_workers(args: argparse.Namespace, workers: int) -> int:
    """Serve with ``workers`` processes; each builds its app with :func:`app_from_environment`."""
    import uvicorn

    # The options are checked here, before any worker starts (and any model loads).
    try:
        defaults = _shipped_local_defaults() if args.upstream == LOCAL else None
        server_settings(args, defaults)
    except ConfigurationError as exc:
        print(f"uq-guard serve: {exc}", file=sys.stderr)
        return 2
    if args.upstream == LOCAL:
        logger.warning(
            "--upstream local with --workers %d: each worker loads its own copy of the "
            "model (and embedder); memory grows %d-fold",
            workers,
            workers,
        )
    os.environ[OPTIONS_ENV] = options_to_json(args)  # the spawned workers inherit it
    logger.info("starting %d workers", workers)
    if balances_connections():
        try:
            reservation = reserve_address(args.host, args.port)
        except OSError as exc:
            where = f"{args.host}:{args.port}"
            print(f"uq-guard serve: cannot listen on {where}: {exc}", file=sys.stderr)
            return 1
        with reservation:
            port = reservation.getsockname()[1]
            config = uvicorn.Config(
                APP_FACTORY,
                factory=True,
                workers=workers,
                host=args.host,
                port=port,
                log_level="warning",
            )
            return 0 if run_supervised(config, args.host, port) else 1
    try:  # one socket shared by the workers (see uq_guard_server.workers)
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            workers=workers,
            host=args.host,
            port=args.port,
            log_level="warning",
        )
    except SystemExit as exc:  # uvicorn exits when it cannot bind the port
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def _shipped_local_defaults() -> dict[str, Any]:
    """The guard defaults the local model ships with, read without loading it."""
    from uq_guard_hf import shipped_guard_defaults

    return dict(shipped_guard_defaults())


def _secrets(args: argparse.Namespace) -> list[str | None]:
    return [os.environ.get(args.api_key_env), os.environ.get(args.upstream_key_env)]


def _log_serving(args: argparse.Namespace, settings: ServerSettings) -> None:
    logger.info(
        "serving %s on http://%s:%d (client key check %s)",
        redact_url(args.upstream),
        args.host,
        args.port,
        "on" if settings.api_key else "off",
    )


def _default_options() -> argparse.Namespace:
    """Every ``serve`` option (and the global ``verbose``) at its default."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args = parser.parse_args([])
    args.verbose = False
    return args


def options_to_json(args: argparse.Namespace) -> str:
    """The ``serve`` options as JSON, for :data:`OPTIONS_ENV`.

    Only the options: the keys stay in the environment variables the options
    name (``--upstream-key-env``, ``--api-key-env``), which each worker reads itself.
    """
    given = vars(args)
    return json.dumps({name: given[name] for name in vars(_default_options()) if name in given})


def options_from_json(text: str) -> argparse.Namespace:
    """The options :func:`options_to_json` wrote, over the defaults of any it left out.

    Raises:
        ConfigurationError: the text is not a JSON object.
    """
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{OPTIONS_ENV} is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ConfigurationError(f"{OPTIONS_ENV} must hold a JSON object")
    args = _default_options()
    for name in vars(args):
        if name in given:
            setattr(args, name, given[name])
    return args


def app_from_environment() -> Any:
    """The app of one ``--workers`` process, built from the options in :data:`OPTIONS_ENV`.

    uvicorn calls it in each worker after setting up its logging. A bad
    option or a failed build exits the worker with uvicorn's startup-failure
    status, so that the parent stops rather than restarting it forever.
    """
    from uvicorn.config import STARTUP_FAILURE

    try:
        args = options_from_json(os.environ.get(OPTIONS_ENV, "{}"))
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING, format=_LOG_FORMAT
        )
        install_redaction(_secrets(args))
        upstream, settings = build(args)
    except ConfigurationError as exc:
        logger.error("uq-guard serve worker %d: %s", os.getpid(), exc)
        sys.exit(STARTUP_FAILURE)
    except Exception:
        logger.exception("uq-guard serve worker %d could not build its app", os.getpid())
        sys.exit(STARTUP_FAILURE)
    _log_serving(args, settings)
    app = create_app(upstream, settings)
    slot = worker_slot()
    if slot is not None:
        app.add_middleware(RebalancingMiddleware, slot=slot)
    return app


_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
"""The loggers with handlers of their own in ``uq-guard serve``: root (all others) and uvicorn's."""


def install_redaction(secrets: Iterable[str | None]) -> None:
    """Put a :class:`RedactingFilter` on every handler of :data:`_LOGGERS` that has none.

    A filter on a handler sees every record the handler writes, whichever
    logger it came from (uvicorn's loggers do not propagate to the root).
    """
    redacting = RedactingFilter(secrets)
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(redacting)
