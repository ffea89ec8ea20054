"""``uq-guard serve --workers N``: the options each worker process rebuilds its app from.

The parent hands its options to the workers as JSON in an environment
variable; the keys stay in the environment variables the options name.
"""

from __future__ import annotations

import argparse
import json

import pytest
from uq_guard_server.serve import (
    OPTIONS_ENV,
    add_arguments,
    app_from_environment,
    options_from_json,
    options_to_json,
    server_settings,
)

from uq_guard.cli import main

UPSTREAM_KEY = "sk-upstream-canary-4f1c9e"
CLIENT_KEY = "client-canary-77d2a0"
OPTIONS = [
    "--upstream",
    "http://127.0.0.1:9/v1",
    "--model",
    "m1",
    "--model",
    "m2",
    "--fallback-model",
    "big",
    "--allow-setting",
    "threshold",
    "--max-upstream-calls",
    "60",
    "--max-request-concurrency",
    "16",
    "--max-active-requests",
    "5",
    "--max-queue",
    "7",
    "--request-timeout",
    "30",
    "--set",
    "policy=abstain",
    "--set",
    "threshold=0.4",
    "--workers",
    "3",
]


def parsed(options: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(options)
    args.verbose = True
    args.run = print  # what the CLI's set_defaults adds: not an option, not handed over
    return args


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("UQ_GUARD_API_KEY", CLIENT_KEY)


@pytest.mark.usefixtures("keys")
def test_the_options_survive_the_hand_over() -> None:
    args = parsed(OPTIONS)

    again = options_from_json(options_to_json(args))

    assert again.workers == 3 and again.verbose is True
    assert again.models == ["m1", "m2"] and again.set == ["policy=abstain", "threshold=0.4"]
    assert server_settings(again) == server_settings(args)
    assert server_settings(again).api_key == CLIENT_KEY  # read by the worker, from its env


@pytest.mark.usefixtures("keys")
def test_no_key_is_handed_over_only_the_names_of_their_variables() -> None:
    handed = options_to_json(parsed(OPTIONS))

    assert UPSTREAM_KEY not in handed and CLIENT_KEY not in handed
    given = json.loads(handed)
    assert given["upstream_key_env"] == "OPENAI_API_KEY"
    assert given["api_key_env"] == "UQ_GUARD_API_KEY"
    assert "run" not in given


@pytest.mark.usefixtures("keys")
def test_a_worker_builds_the_app_the_options_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parsed(OPTIONS)
    monkeypatch.setenv(OPTIONS_ENV, options_to_json(args))

    app = app_from_environment()

    assert app.state.settings == server_settings(args)
    assert app.state.upstream.fallback_model == "big"


def test_a_worker_with_bad_options_stops_with_uvicorns_startup_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.config import STARTUP_FAILURE

    monkeypatch.setenv(OPTIONS_ENV, options_to_json(parsed([*OPTIONS, "--set", "n_samples=50"])))

    # not a crash: uvicorn would restart a crashed worker forever
    with pytest.raises(SystemExit) as stopped:
        app_from_environment()
    assert stopped.value.code == STARTUP_FAILURE


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_workers_below_one_are_refused(workers: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--workers", workers]) == 2
    assert "--workers must be a whole number >= 1" in capsys.readouterr().err


def test_bad_options_are_refused_before_any_worker_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--workers", "2"]
    assert main([*upstream, "--set", "n_samples=50"]) == 2
    assert "max_upstream_calls=64" in capsys.readouterr().err
