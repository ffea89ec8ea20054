"""A calibration remembers the settings it was fitted under; a guard says when its own differ.

And a model can carry guard defaults (``HuggingFaceChatModel.default()``
carries the calibration fitted for it), applied under the user's own settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from uq_guard_hf import provision, shipped_calibration
from uq_guard_hf.chat_model import HuggingFaceChatModel, shipped_guard_defaults
from uq_guard_langchain import GuardedChatModel

import uq_guard
from tests.unit.fake_backend import FakeBackend
from tests.unit.lc_fakes import ScriptedChatModel, steady
from uq_guard import Guard, GuardConfig
from uq_guard.calibration import Calibrator, PlattMapping, load_calibration
from uq_guard.cli import main
from uq_guard.embeddings import shared_embedder

COUNTRIES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "countries"
# the committed run predates the system message and the GAAP edit settings
COMMITTED_RUN = json.loads((COUNTRIES / "run.json").read_text(encoding="utf-8"))
QUESTION = "What is the capital of France?"
PARAPHRASES = ["Which city is France's capital?", "Name the capital of France."]


def _run(tmp_path: Path, name: str, settings: dict[str, Any] | None, part: slice) -> Path:
    """A records file of some committed countries records, with ``settings`` as its run.json."""
    folder = tmp_path / name
    folder.mkdir()
    lines = (COUNTRIES / "records.jsonl").read_text(encoding="utf-8").splitlines()[part]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if settings is not None:
        (folder / "run.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder / "records.jsonl"


def _calibrate(records: list[Path], out: Path, *extra: str) -> int:
    argv = ["calibrate", *(a for r in records for a in ("--records", str(r)))]
    return main([*argv, *extra, "--out", str(out)])


# -- uq-guard calibrate records the settings ------------------------------------------------


def test_calibrate_stores_the_settings_the_records_were_made_with(tmp_path: Path) -> None:
    current = {**COMMITTED_RUN, "system": "Answer in a few words.", "gaap_edits": "preserving"}
    current["gaap_frames"] = True
    records = _run(tmp_path, "run", current, slice(0, 200))
    out = tmp_path / "calib.json"

    assert _calibrate([records], out) == 0

    assert json.loads(out.read_text(encoding="utf-8"))["fitted_with"] == {
        "n_perturbations": 4,
        "n_samples": 3,
        "max_tokens": 24,
        "temperature": 0.7,
        "perturbation": "gaap",
        "gaap_edits": "preserving",
        "gaap_frames": True,
        "similarity": "shifted_cosine",
        "n_bootstrap": 30,
        "cluster_threshold": 0.85,
        "embedding_model": None,
        "system": "Answer in a few words.",
    }
    assert load_calibration(out).fitted_with["n_samples"] == 3


def test_fused_calibration_of_pooled_runs_records_their_common_settings(tmp_path: Path) -> None:
    # an old run.json: no system message and the published GAAP, as the runner reads it
    first = _run(tmp_path, "a", COMMITTED_RUN, slice(0, 200))
    second = _run(tmp_path, "b", COMMITTED_RUN, slice(200, 400))
    out = tmp_path / "fused.json"
    fuse = ("--fuse", "--features", "gnll,degree", "--folds", "2", "--bootstrap", "0")

    assert _calibrate([first, second], out, *fuse) == 0

    saved = load_calibration(out)
    assert saved.fused
    assert saved.fitted_with is not None
    assert saved.fitted_with["max_tokens"] == 24 and saved.fitted_with["system"] is None
    assert saved.fitted_with["gaap_edits"] == "paper" and saved.fitted_with["gaap_frames"] is False


def test_pooled_runs_with_different_settings_are_refused(tmp_path: Path, capsys) -> None:
    first = _run(tmp_path, "a", COMMITTED_RUN, slice(0, 200))
    second = _run(tmp_path, "b", {**COMMITTED_RUN, "n_samples": 5}, slice(200, 400))

    assert _calibrate([first, second], tmp_path / "c.json") == 2

    error = capsys.readouterr().err
    assert "different n_samples: 3 in" in error and "and 5 in" in error
    assert not (tmp_path / "c.json").exists()


def _rescored_as(records: Path, similarity: str) -> None:
    """Mark ``records`` as rescored under ``similarity`` (their run.json still says otherwise)."""
    lines = records.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["scoring"] = {**row["scoring"], "similarity": similarity}
    records.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")


def test_the_records_scoring_settings_win_over_the_run_s_after_a_rescore(tmp_path: Path) -> None:
    records = _run(tmp_path, "run", COMMITTED_RUN, slice(0, 200))
    _rescored_as(records, "answer_words")
    out = tmp_path / "calib.json"

    assert _calibrate([records], out) == 0

    assert load_calibration(out).fitted_with["similarity"] == "answer_words"


def test_records_scored_alike_or_not_at_all(tmp_path: Path, capsys) -> None:
    first = _run(tmp_path, "a", COMMITTED_RUN, slice(0, 200))
    second = _run(tmp_path, "b", COMMITTED_RUN, slice(200, 400))
    _rescored_as(second, "answer_words")

    assert _calibrate([first, second], tmp_path / "c.json") == 2

    assert "scored with different similarity" in capsys.readouterr().err


def test_without_run_json_fitted_with_is_null_and_the_cli_warns(tmp_path: Path, capsys) -> None:
    records = _run(tmp_path, "run", None, slice(0, 200))
    out = tmp_path / "calib.json"

    assert _calibrate([records], out) == 0

    assert "fitted_with is null" in capsys.readouterr().err
    assert json.loads(out.read_text(encoding="utf-8"))["fitted_with"] is None


def test_a_file_written_before_fitted_with_existed_still_loads(tmp_path: Path) -> None:
    old = {
        "format": "uq_guard.calibration",
        "version": 1,
        "method": "inv_entropy",
        "score": None,
        "mapping": {"kind": "platt", "slope": 2.0, "intercept": -1.0},
        "n_fitted": 10,
        "n_correct": 4,
        "risk_control": None,
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    assert load_calibration(path).fitted_with is None
    assert GuardConfig(calibration=path).calibration == path


# -- the guard says when its settings differ ---------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


#: What the small guards of these tests run with (besides max_tokens=32, the default).
SMALL = {"n_perturbations": 1, "n_samples": 2, "perturbation": "paraphrase"}


def _calibrator(**fitted_with: Any) -> Calibrator:
    """A Platt map of the label-free confidence (any path), fitted under ``fitted_with``."""
    return Calibrator(
        mapping=PlattMapping(slope=4.0, intercept=-2.0), fitted_with=fitted_with or None
    )


def _guard(calibration: Any, embedder, **config: Any) -> Guard:
    backend = FakeBackend(paraphrases=PARAPHRASES[:1])
    return Guard(backend, embedder=embedder, calibration=calibration, **{**SMALL, **config})


async def test_a_guard_with_other_settings_notes_it_in_every_report(embedder) -> None:
    calibrator = _calibrator(
        n_perturbations=1,
        n_samples=3,
        max_tokens=24,
        temperature=0.7,
        perturbation="paraphrase",
        system="Answer in a few words.",  # the guard cannot see it: never compared
        reply_max_tokens=256,  # not a guard setting: ignored
    )
    guard = _guard(calibrator, embedder)
    note = (
        "calibration fitted with n_samples=3, max_tokens=24; this guard uses n_samples=2, "
        "max_tokens=32: its P(correct) may be off"
    )

    for _ in range(2):
        report = (await guard.arun(QUESTION)).report
        assert report.calibrated
        assert report.notes.count(note) == 1
        # information, not degradation: nothing of the call was lost
        assert not report.degraded and report.degraded_reasons == []


async def test_strict_mode_does_not_raise_on_a_settings_note(embedder) -> None:
    """The note is information; strict mode raises only when the estimate lost something."""
    calibrator = _calibrator(n_samples=3, max_tokens=24, temperature=0.7, perturbation="paraphrase")

    report = (await _guard(calibrator, embedder, strict=True).arun(QUESTION)).report

    assert report.calibrated and not report.degraded
    assert any("may be off" in note for note in report.notes)


async def test_a_guard_with_the_fitted_settings_adds_no_note(embedder) -> None:
    same = _calibrator(n_samples=2, max_tokens=24, temperature=0.7, perturbation="paraphrase")
    report = (await _guard(same, embedder, max_tokens=24).arun(QUESTION)).report
    assert report.calibrated and not report.degraded

    unknown = (await _guard(_calibrator(), embedder).arun(QUESTION)).report
    assert unknown.calibrated and not unknown.degraded


# -- a model's guard defaults --------------------------------------------------------------------


class ChatModelWithDefaults(ScriptedChatModel):
    """A scripted chat model that carries guard defaults, as HuggingFaceChatModel.default() does."""

    guard_defaults: dict[str, Any] = Field(default_factory=dict)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A calibration file fitted with n_samples=2, as a model would ship it."""
    fitted = {**SMALL, "max_tokens": 128, "temperature": 0.7, "system": "Be brief."}
    return _calibrator(**fitted).save(tmp_path / "shipped.json")


def _model_with(shipped: Path) -> ChatModelWithDefaults:
    defaults = shipped_guard_defaults(shipped)
    assert defaults == {"calibration": str(shipped), **SMALL, "max_tokens": 128, "temperature": 0.7}
    return ChatModelWithDefaults(
        respond=steady("Paris is the capital of France."),
        paraphrases=PARAPHRASES[:1],
        guard_defaults=defaults,
    )


def _report(chat: GuardedChatModel) -> dict[str, Any]:
    return chat.invoke(QUESTION).response_metadata["uq_guard"]


def test_a_model_s_shipped_calibration_applies_by_default(shipped: Path, embedder) -> None:
    chat = GuardedChatModel(model=_model_with(shipped), embedder=embedder)

    assert chat.guard_config.calibration == str(shipped) and chat.guard_config.n_samples == 2
    report = _report(chat)
    assert report["calibrated"] is True and report["degraded"] is False


def test_explicit_calibration_none_turns_the_shipped_one_off(shipped: Path, embedder) -> None:
    model = _model_with(shipped)
    chat = GuardedChatModel(model=model, embedder=embedder, calibration=None)

    assert chat.guard_config.calibration is None
    assert chat.guard_config.n_samples == 2  # the other defaults still apply
    assert _report(chat)["calibrated"] is False
    assert uq_guard.guard(model, calibration=None).guard_config.calibration is None


def test_explicit_settings_win_over_the_model_s_defaults(shipped: Path, embedder) -> None:
    model = _model_with(shipped)
    chat = GuardedChatModel(model=model, embedder=embedder, n_samples=5)

    assert chat.guard_config.n_samples == 5 and chat.guard_config.calibration == str(shipped)
    report = _report(chat)
    assert report["calibrated"] is True
    assert (
        "calibration fitted with n_samples=2; this guard uses n_samples=5: its P(correct) "
        "may be off" in report["notes"]
    )
    # a field set in guard_config is explicit too; the fields left unset take the defaults
    config = GuardedChatModel(model=model, guard_config=GuardConfig(n_samples=4)).guard_config
    assert config.n_samples == 4 and config.calibration == str(shipped)
    assert uq_guard.guard(model, n_samples=3).guard_config.n_samples == 3
    assert uq_guard.guard(model).guard_config.calibration == str(shipped)


# -- HuggingFaceChatModel.default() carries the shipped calibration ------------------------------


@pytest.fixture
def default_without_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """``default()`` with neither provisioning nor loading: the model is only constructed."""
    monkeypatch.setattr(provision, "default_model_path", lambda: "smollm2-not-loaded")
    # on transformers: llama.cpp, picked on CPU when installed, would try to load
    monkeypatch.setenv("UQ_GUARD_LOCAL_ENGINE", "transformers")

    def construct(cls, name_or_path, **fields):
        return cls(model_name=str(name_or_path), device="cpu", **fields)

    monkeypatch.setattr(HuggingFaceChatModel, "from_pretrained", classmethod(construct))


def test_default_model_without_a_shipped_file_has_no_guard_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_without_weights
) -> None:
    monkeypatch.setattr(shipped_calibration, "DEFAULT_CALIBRATION", tmp_path / "absent.json")

    model = HuggingFaceChatModel.default()

    assert model.guard_defaults == {}
    assert GuardedChatModel(model=model).guard_config.calibration is None


def test_default_model_carries_the_shipped_calibration_and_its_settings(
    shipped: Path, monkeypatch: pytest.MonkeyPatch, default_without_weights
) -> None:
    monkeypatch.setattr(shipped_calibration, "DEFAULT_CALIBRATION", shipped)

    model = HuggingFaceChatModel.default()

    expected = {"calibration": str(shipped), **SMALL, "max_tokens": 128, "temperature": 0.7}
    assert model.guard_defaults == expected
    assert "guard_defaults" not in model.model_dump()
    assert "guard_defaults" not in model._identifying_params
    config = uq_guard.guard(model, n_samples=3).guard_config
    assert config.calibration == str(shipped) and config.n_samples == 3
    assert HuggingFaceChatModel.default(guard_defaults={}).guard_defaults == {}


def test_an_unusable_shipped_file_is_logged_and_skipped(tmp_path: Path, caplog) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="uq_guard_hf.shipped_calibration"):
        assert shipped_guard_defaults(broken) == {}
    assert "not used" in caplog.text


def test_the_shipped_calibration_when_present_gives_valid_guard_settings() -> None:
    defaults = shipped_guard_defaults()
    if not shipped_calibration.DEFAULT_CALIBRATION.is_file():
        assert defaults == {}
        return
    assert defaults["calibration"] == str(shipped_calibration.DEFAULT_CALIBRATION)
    assert load_calibration(defaults["calibration"]).fitted_with is not None
    GuardConfig(**defaults)


def test_the_shipped_threshold_is_the_files_base_rate(tmp_path: Path) -> None:
    """A model that is usually wrong: abstain where the scores lower P(correct), not under 0.5."""
    fitted = Calibrator(
        mapping=PlattMapping(slope=4.0, intercept=-2.0),
        n_fitted=200,
        n_correct=30,
        fitted_with={**SMALL, "max_tokens": 24},
    )
    assert fitted.base_rate == pytest.approx(0.15)
    defaults = shipped_guard_defaults(fitted.save(tmp_path / "fitted.json"))
    assert defaults["threshold"] == pytest.approx(0.15)
    assert GuardConfig(**defaults).threshold == pytest.approx(0.15)

    unknown = _calibrator(**SMALL)  # no labelled count: no base rate, the guard's own default
    assert unknown.base_rate is None
    assert "threshold" not in shipped_guard_defaults(unknown.save(tmp_path / "unknown.json"))
