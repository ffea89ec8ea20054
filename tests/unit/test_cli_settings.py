"""Any GuardConfig field by name from a command line: ``uq-guard eval --set`` and ``--also``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.unit.test_eval_runner import _CLI_BACKEND, write_questions
from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard.cli import main
from uq_guard.cli_settings import apply_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
FAKE = "py:tests.unit.test_eval_runner:fake_model"


def test_values_are_read_as_json_else_as_text_and_a_later_pair_wins() -> None:
    settings = parse_settings(
        ["threshold=0.4", "adaptive=true", "calibration=null", "policy=abstain", "threshold=0.5"]
    )
    assert settings == {
        "threshold": 0.5,
        "adaptive": True,
        "calibration": None,
        "policy": "abstain",
    }
    assert parse_settings(['gaap_protected=["Paris", "Rome"]'])["gaap_protected"] == [
        "Paris",
        "Rome",
    ]


def test_a_pair_without_a_name_or_an_equals_sign_is_refused() -> None:
    for pair in ("threshold", "=0.4"):
        with pytest.raises(ConfigurationError, match=r"--set takes KEY=VALUE"):
            parse_settings([pair])


def test_an_unknown_name_is_named_with_every_known_one() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_settings(["treshold=0.4"], option="--also")
    message = str(caught.value)
    assert "--also treshold=0.4" in message and "'treshold'" in message
    assert "threshold" in message and "n_samples" in message


def test_a_bad_value_is_refused_by_guardconfig_naming_the_option_and_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"^--set: invalid GuardConfig: threshold=2"):
        apply_settings(None, parse_settings(["threshold=2"]))


def test_settings_win_over_a_config_and_over_defaults_by_name() -> None:
    base = GuardConfig(n_samples=3, threshold=0.2)
    config = apply_settings(base, {"threshold": 0.4})
    assert (config.n_samples, config.threshold) == (3, 0.4)
    assert {"n_samples", "threshold"} <= config.model_fields_set  # explicit stays explicit
    defaults = {"n_samples": 4, "calibration": "x.json", "not_a_field": 1}
    config = apply_settings(defaults, parse_settings(["calibration=null"]))
    assert config.n_samples == 4 and config.calibration is None


def _eval_argv(data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["eval", "--data", str(data), "--model", FAKE, "--out", str(out)]
    argv += ["--n-perturbations", "1", "--n-samples", "2", "--max-tokens", "16"]
    return [*argv, "--bootstrap", "0", "--no-plots", "--no-progress", *extra]


def test_eval_set_reaches_the_guard_and_its_run_json(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "run"
    argv = _eval_argv(data, out, "--set", "n_bootstrap=7", "--set", "n_samples=3")
    assert main(argv) == 0
    saved = json.loads((out / "run.json").read_text())
    assert saved["n_bootstrap"] == 7 and saved["n_samples"] == 3  # --set wins over --n-samples
    # a resume with another --set is refused, as with any other setting, before any call
    assert main(_eval_argv(data, out, "--set", "n_bootstrap=8", "--set", "n_samples=3")) == 2
    assert "n_bootstrap: 7 -> 8" in capsys.readouterr().err
    assert _CLI_BACKEND[-1].calls == 0


def test_eval_set_refuses_a_bad_name_before_any_model_call(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    models = len(_CLI_BACKEND)
    for pair, named in (("treshold=0.4", "'treshold'"), ("policy=abstain", "policy")):
        assert main(_eval_argv(data, tmp_path / "run", "--set", pair)) == 2
        assert named in capsys.readouterr().err
    assert len(_CLI_BACKEND) == models


def test_eval_set_refuses_a_bad_value_naming_the_field(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    assert main(_eval_argv(data, tmp_path / "run", "--set", "threshold=2")) == 2
    assert "--set: invalid GuardConfig: threshold=2" in capsys.readouterr().err
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_benchmark_also_reads_pairs_as_eval_set_does() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from methods_nq_open import parse_overrides
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert parse_overrides("gaap_min_fidelity=0.75,adaptive=true") == {
        "gaap_min_fidelity": 0.75,
        "adaptive": True,
    }
    for spec, named in (("gaap_min_fidelity", "KEY=VALUE"), ("n_samplez=2", "'n_samplez'")):
        with pytest.raises(SystemExit, match=named):
            parse_overrides(spec)
