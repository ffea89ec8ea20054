"""``uq-guard serve --upstream local`` guards the local model as it ships: calibrated.

``HuggingFaceChatModel.default()`` carries ``guard_defaults``: the calibration
fitted for SmolLM2 and the sampling settings it was fitted with. The proxy
over that model starts from them, and each ``--set`` of the operator wins.
"""

from __future__ import annotations

import argparse
from typing import Any

import openai
import pytest
from uq_guard_hf.chat_model import shipped_guard_defaults
from uq_guard_server import create_app
from uq_guard_server.serve import LOCAL_MODEL_NAME, add_arguments, build, guard_config

from tests.support.serve import serving
from uq_guard._exceptions import ConfigurationError

SAMPLING = ("n_perturbations", "n_samples", "max_tokens", "temperature", "perturbation")


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    defaults = shipped_guard_defaults()
    assert defaults["calibration"], "the wheel ships SmolLM2's calibration"
    return defaults


@pytest.mark.slow
def test_serve_local_guards_with_the_models_shipped_calibration(shipped: dict[str, Any]) -> None:
    upstream, settings = build(options("--upstream", "local"))
    guard = settings.guard
    assert str(guard.calibration) == shipped["calibration"]
    assert guard.threshold == shipped["threshold"]
    assert {k: getattr(guard, k) for k in SAMPLING} == {k: shipped[k] for k in SAMPLING}

    with serving(create_app(upstream, settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
        reply = client.chat.completions.create(
            model=LOCAL_MODEL_NAME,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
        )
    report = reply.model_extra["uncertainty"]
    assert report["calibrated"] is True
    assert report["n_perturbations_requested"] == shipped["n_perturbations"]
    assert report["n_samples"] == report["n_prompts"] * shipped["n_samples"]


def test_the_operators_settings_win_over_the_shipped_defaults(shipped: dict[str, Any]) -> None:
    chosen = guard_config(["n_samples=2", "calibration=null", "threshold=0.3"], shipped)
    assert (chosen.n_samples, chosen.calibration, chosen.threshold) == (2, None, 0.3)
    # what the operator did not set still comes from the model
    assert chosen.n_perturbations == shipped["n_perturbations"]
    assert chosen.max_tokens == shipped["max_tokens"]


def test_shipped_defaults_over_the_servers_caps_are_refused(shipped: dict[str, Any]) -> None:
    from uq_guard_server.serve import server_settings

    # SmolLM2's defaults need 1 + 5 prompts x 3 samples + 1 = 17 calls at most
    with pytest.raises(ConfigurationError, match="max_upstream_calls=10"):
        server_settings(options("--upstream", "local", "--max-upstream-calls", "10"), shipped)


def test_an_api_upstream_gets_no_local_defaults() -> None:
    _, settings = build(options("--upstream", "http://127.0.0.1:9/v1"))
    assert settings.guard.calibration is None
    assert settings.guard.model_fields_set == set()
