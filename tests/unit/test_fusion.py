"""The fused calibrator: fitting, held-out metrics, its file, the guard applying it, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from tests.unit.fake_backend import FakeBackend
from uq_guard import ConfigurationError, Guard, GuardConfig
from uq_guard.calibration import (
    GUARD_CONFIDENCE,
    Calibrator,
    FusedMapping,
    LogisticModel,
    load_calibration,
)
from uq_guard.cli import main
from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.fusion import evaluate_fused, fit_fused, fused_data, select_features
from uq_guard.evaluation.metrics import smooth_ece
from uq_guard.evaluation.records import read_records

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
QUESTION = "What is the capital of France?"


def two_views(n: int, seed: int = 0) -> tuple[list[dict[str, float | None]], np.ndarray]:
    """Right/wrong driven by one latent signal that two scores see through independent noise.

    ``gnll`` and ``semantic_entropy`` are uncertainties (the fused model negates them),
    ``semantic_volume`` is pure noise. Each score alone ranks worse than both together.
    """
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    correct = (rng.random(n) < expit(4.0 * signal - 0.5)).astype(float)
    gnll = 2.0 - 0.8 * (signal + rng.normal(size=n))
    degree = 0.4 - 0.1 * (signal + rng.normal(size=n))
    noise = rng.normal(size=n)
    rows = [
        {"gnll": float(g), "semantic_entropy": float(d), "semantic_volume": float(e)}
        for g, d, e in zip(gnll, degree, noise, strict=True)
    ]
    return rows, correct


# -- fitting and held-out metrics ------------------------------------------------------


def test_fused_ranks_better_held_out_than_each_score_alone() -> None:
    rows, correct = two_views(600)

    result = evaluate_fused(rows, correct, n_resamples=200, seed=0)

    fused = result.summary.metrics["auroc"]
    best_name, best = result.best_single or ("", 0.0)
    assert best_name in ("gnll", "semantic_entropy")
    assert fused.estimate > best + 0.025
    assert fused.low < fused.estimate < fused.high  # a real bootstrap interval
    assert result.summary.metrics["smooth_ece"].estimate < 0.05
    assert result.single["semantic_volume"].metrics["auroc"].estimate == pytest.approx(
        0.5, abs=0.06
    )
    # the file records the same held-out point estimates
    held_out = result.calibrator.mapping.held_out
    assert held_out is not None and held_out.n_folds == 5 and held_out.n == 600
    assert held_out.auroc == pytest.approx(fused.estimate)
    assert held_out.smooth_ece == pytest.approx(result.summary.metrics["smooth_ece"].estimate)
    # out-of-fold means what it says: every question got a probability from a model
    # that never saw it, so it differs from the final model's in-sample one
    assert np.isfinite(result.probability).all()
    final = result.calibrator.mapping.predict(fused_data(rows, correct).table).probability
    assert not np.allclose(final, result.probability)


def test_fitting_is_deterministic_for_a_seed() -> None:
    rows, correct = two_views(200, seed=3)
    first = fit_fused(rows, correct, seed=7, n_folds=3)
    assert first.mapping.held_out is not None
    assert fit_fused(rows, correct, seed=7, n_folds=3) == first
    # the (dicts, correct) tuple form
    assert fit_fused((rows, correct), seed=7, n_folds=3, cross_fit=False) == first.model_copy(
        update={"mapping": first.mapping.model_copy(update={"held_out": None})}
    )


def test_the_fused_model_weights_the_informative_scores() -> None:
    rows, correct = two_views(2000, seed=1)
    model = fit_fused(rows, correct, cross_fit=False).mapping.models[0]
    weight = dict(zip(model.features, model.coefficients, strict=True))
    # uncertainties are negated first, so both informative weights are positive
    assert weight["gnll"] > 0.5 and weight["semantic_entropy"] > 0.5
    assert abs(weight["semantic_volume"]) < 0.15
    assert model.means[model.features.index("gnll")] == pytest.approx(-2.0, abs=0.1)


def test_default_features_are_present_varying_scores_and_features_override() -> None:
    rows, correct = two_views(200)
    for i, row in enumerate(rows):
        row["constant"] = 1.0
        row["sparse"] = float(i) if i % 10 else None  # present in 90%
        row["mostly"] = float(i) if i % 40 else float("nan")  # present in 97.5%
        row[GUARD_CONFIDENCE] = 0.5 + 0.001 * i
    # by default only scores that read the answers (ANSWER_SCORES) ...
    assert select_features(rows) == ["gnll", "semantic_entropy", "semantic_volume"]
    # ... or every present, varying score
    everything = select_features(rows, answer_scores_only=False)
    assert everything == ["gnll", "semantic_entropy", "semantic_volume", "mostly"]
    assert select_features(rows, min_presence=0.85, answer_scores_only=False) == [
        "gnll",
        "semantic_entropy",
        "semantic_volume",
        "sparse",
        "mostly",
    ]
    chosen = fused_data(rows, correct, features=["semantic_entropy", GUARD_CONFIDENCE])
    assert chosen.features == ["semantic_entropy", GUARD_CONFIDENCE]
    np.testing.assert_allclose(chosen.table[:3, 1], [0.5, 0.501, 0.502])
    with pytest.raises(ConfigurationError, match="no score 'nope'"):
        fused_data(rows, correct, features=["semantic_entropy", "nope"])


def test_too_few_right_or_wrong_answers_is_refused() -> None:
    rows, _ = two_views(50)
    with pytest.raises(ConfigurationError, match="at least 2 right and 2 wrong"):
        fit_fused(rows, [1.0] * 49 + [0.0])
    with pytest.raises(ConfigurationError, match="same length"):
        fit_fused(rows, [1.0, 0.0])


def test_recalibration_is_kept_only_when_it_lowers_held_out_ece() -> None:
    rows, correct = two_views(800, seed=2)
    well_specified = fit_fused(rows, correct, cross_fit=False).mapping.models[0]
    assert well_specified.recalibration is None

    # a far too strong penalty leaves the logistic curve flat (underconfident): Platt or
    # isotonic on the logit repairs it, and the held-out ECE shows it
    shrunk = evaluate_fused(rows, correct, C=3e-3, recalibration="none", n_resamples=0)
    repaired = evaluate_fused(rows, correct, C=3e-3, n_resamples=0)
    assert repaired.calibrator.mapping.models[0].recalibration is not None
    before = shrunk.summary.metrics["smooth_ece"].estimate
    after = repaired.summary.metrics["smooth_ece"].estimate
    assert before > 0.08 and after < before - 0.05
    assert repaired.calibrator.mapping.models[0].recalibration.kind == "platt"
    # a monotone map of the logit keeps the ranking (isotonic only up to ties)
    assert repaired.summary.metrics["auroc"].estimate == pytest.approx(
        shrunk.summary.metrics["auroc"].estimate, abs=0.01
    )


def test_on_a_committed_records_file() -> None:
    records = read_records(RESULTS / "countries" / "records.jsonl")
    result = evaluate_fused(records, features=["gnll", "degree"], n_resamples=0, n_folds=3)
    assert result.calibrator.method == "inv_entropy"
    assert result.correct.size == 400 and int(result.correct.sum()) == 120
    held_out = result.summary.metrics["auroc"].estimate
    assert held_out > 0.72  # each alone ranks at 0.70-0.78 here
    assert smooth_ece(result.probability, result.correct) < 0.06
    # the sub-model for calls without log-probabilities reads degree alone
    assert [m.features for m in result.calibrator.mapping.models] == [
        ["gnll", "degree"],
        ["degree"],
    ]
    # ... and what a call without log-probabilities gets, held out: about degree's own ranking
    alone = result.models[("degree",)]
    assert alone.n == 400 and alone.auroc == pytest.approx(0.697, abs=0.02)
    assert result.models[("gnll", "degree")].auroc == pytest.approx(held_out)


# -- the file ----------------------------------------------------------------------------


def test_fused_file_round_trip(tmp_path: Path) -> None:
    rows, correct = two_views(300)
    calibrator = fit_fused(rows, correct)
    path = calibrator.save(tmp_path / "calib.json")

    loaded = load_calibration(path)
    assert loaded == calibrator and loaded.fused
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["score"] is None
    mapping = data["mapping"]
    assert mapping["kind"] == "fused" and mapping["clip"] == 5.0
    model = mapping["models"][0]
    assert model["features"] == ["gnll", "semantic_entropy", "semantic_volume"]
    for key in ("means", "scales", "coefficients"):
        assert len(model[key]) == 3
    assert {"intercept", "C", "recalibration", "n_fitted", "n_correct"} <= set(model)
    assert set(mapping["held_out"]) == {
        "n_folds", "seed", "n", "n_correct", "auroc", "ece", "smooth_ece"
    }  # fmt: skip
    table = fused_data(rows, correct).table
    np.testing.assert_array_equal(
        loaded.mapping.predict(table).probability, calibrator.mapping.predict(table).probability
    )


def _model(features: list[str], intercept: float = 0.0, **overrides) -> LogisticModel:
    k = len(features)
    fields = {
        "features": features,
        "means": [0.0] * k,
        "scales": [1.0] * k,
        "coefficients": [1.0] * k,
        "intercept": intercept,
        "C": 1.0,
        **overrides,
    }
    return LogisticModel(**fields)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=1), "needs format version 2"),
        (lambda d: d.update(score="gnll"), "score must be null"),
        (lambda d: d["mapping"]["models"][0].update(means=[0.0]), "one value per feature"),
        (lambda d: d["mapping"]["models"][0].update(scales=[1.0, 0.0]), "greater than 0"),
        (lambda d: d["mapping"]["models"][1].update(features=["z"]), "subset"),
        (lambda d: d["mapping"]["models"].append(d["mapping"]["models"][1]), "repeats"),
        (lambda d: d["mapping"].update(models=[]), "at least 1"),
    ],
)
def test_a_bad_fused_file_is_refused(tmp_path: Path, edit, message: str) -> None:
    good = Calibrator(mapping=FusedMapping(models=[_model(["a", "b"]), _model(["a"])]))
    data = good.model_dump(mode="json")
    edit(data)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match=message):
        load_calibration(path)


def test_a_fused_calibrator_is_read_with_calibrate_not_apply() -> None:
    calibrator = Calibrator(mapping=FusedMapping(models=[_model(["a"])]))
    with pytest.raises(ConfigurationError, match="reads several scores"):
        calibrator.apply(0.5)


def test_applying_needs_neither_scikit_learn_nor_the_evaluation_package() -> None:
    code = (
        "import sys, uq_guard.calibration as c; "
        "bad = [m for m in sys.modules if m.startswith(('uq_guard.evaluation', 'sklearn'))]; "
        "assert not bad, bad; "
        "assert not hasattr(c, 'fit_platt'), 'fitting lives in uq_guard.evaluation.calibrators'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- missing features at run time -----------------------------------------------------------


def _three_groups() -> Calibrator:
    """Features from three groups: log-probabilities, perturbations and none (degree)."""
    features = ["gnll", "inv_entropy", "degree"]
    return Calibrator(
        method="inv_entropy",
        mapping=FusedMapping(
            models=[
                _model(features, 0.0),
                _model(["inv_entropy", "degree"], 1.0),
                _model(["gnll", "degree"], 2.0),
                _model(["degree"], 3.0),
            ]
        ),
    )


def test_a_call_uses_the_sub_model_fitted_for_the_scores_it_has() -> None:
    calibrator = _three_groups()
    scores = {"gnll": 0.2, "inv_entropy": 0.3, "degree": 0.4}  # uncertainties: read negated

    full = calibrator.calibrate(scores, method="inv_entropy")
    assert full.probability == pytest.approx(expit(-0.9)) and full.note == ""

    no_logprobs = calibrator.calibrate({**scores, "gnll": None}, method="inv_entropy")
    assert no_logprobs.probability == pytest.approx(expit(1.0 - 0.7))
    assert no_logprobs.note == ""  # a model fitted for this case: nothing degraded

    # confidence from Degree: the perturbation scores no longer mean what they meant
    other_path = calibrator.calibrate(scores, method="degree")
    assert other_path.probability == pytest.approx(expit(2.0 - 0.6))

    bare = calibrator.calibrate({"degree": float("nan"), "gnll": None})
    assert bare.probability is None and "has none of them" in bare.note


def test_without_a_fitting_sub_model_the_training_mean_is_imputed_and_said() -> None:
    model = _model(["gnll", "degree"], 0.5, means=[-2.0, -0.4], scales=[0.5, 0.1])
    calibrator = Calibrator(mapping=FusedMapping(models=[model]))

    reading = calibrator.calibrate({"degree": 0.3})

    # degree as a confidence is -0.3, one scale above its mean; gnll reads z = 0
    assert reading.probability == pytest.approx(expit(0.5 + 1.0))
    assert reading.note == "fused calibration: gnll missing, imputed its training mean"


def test_standardised_features_are_clipped() -> None:
    calibrator = Calibrator(mapping=FusedMapping(models=[_model(["degree"])], clip=3.0))
    far = calibrator.calibrate({"degree": -1e6}).probability
    assert far == pytest.approx(expit(3.0))


# -- the guard applies it ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def _guard(calibration, embedder, backend: FakeBackend | None = None, **config) -> Guard:
    backend = backend or FakeBackend(paraphrases=["Which city is France's capital?"])
    settings = {"n_perturbations": 1, "n_samples": 2, "perturbation": "paraphrase", **config}
    return Guard(backend, embedder=embedder, calibration=calibration, **settings)


def _runtime_rows(n: int, seed: int = 0) -> tuple[list[dict[str, float | None]], np.ndarray]:
    """Synthetic records over scores the guard computes, in their real ranges."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    correct = (rng.random(n) < expit(1.5 * signal)).astype(float)
    rows = [
        {
            "gnll": float(1.0 - 0.3 * (s + rng.normal())),
            "degree": float(0.3 - 0.1 * (s + rng.normal())),
            "inv_entropy": float(1.5 - 0.2 * (s + rng.normal())),
            GUARD_CONFIDENCE: float(np.clip(0.5 + 0.15 * (s + rng.normal()), 0, 1)),
        }
        for s in signal
    ]
    return rows, correct


async def test_guard_reports_the_fused_probability(tmp_path: Path, embedder) -> None:
    rows, correct = _runtime_rows(400)
    features = ["gnll", "degree", "inv_entropy", GUARD_CONFIDENCE]
    fitted = fit_fused(rows, correct, features=features, method="inv_entropy", cross_fit=False)
    path = fitted.save(tmp_path / "calib.json")

    assert GuardConfig(calibration=path).calibration == path  # the file validates up front
    report = (await _guard(path, embedder).arun(QUESTION)).report

    assert report.method == "inv_entropy" and report.calibrated
    assert {"gnll", "degree", "inv_entropy", "eigv", "semantic_entropy"} <= set(report.scores)
    expected = fitted.calibrate(
        report.scores, confidence=report.raw_confidence, method="inv_entropy"
    )
    assert expected.note == ""  # FakeBackend returns log-probabilities: the full model ran
    assert report.confidence == pytest.approx(expected.probability)
    assert report.raw_confidence is not None and report.raw_confidence != report.confidence
    assert not report.degraded


async def test_guard_without_perturbations_uses_the_sub_model_for_that_path(
    tmp_path: Path, embedder
) -> None:
    rows, correct = _runtime_rows(400, seed=1)
    features = ["gnll", "degree", "inv_entropy", GUARD_CONFIDENCE]
    fitted = fit_fused(rows, correct, features=features, method="inv_entropy", cross_fit=False)
    sub_models = {tuple(m.features): m for m in fitted.mapping.models}
    assert ("gnll", "degree") in sub_models

    report = (await _guard(fitted, embedder, n_perturbations=0).arun(QUESTION)).report

    assert report.method == "degree" and report.calibrated and not report.degraded
    values = np.array([[-report.scores["gnll"], -report.scores["degree"]]])
    expected = sub_models[("gnll", "degree")].probability(values, clip=fitted.mapping.clip)[0]
    assert report.confidence == pytest.approx(expected)


async def test_guard_notes_an_imputed_score(embedder) -> None:
    # a feature the guard never computes and no sub-model without it: imputed, and said so
    model = _model(["degree", "reply_length"], 0.0, means=[-0.3, 10.0], scales=[0.1, 5.0])
    calibrator = Calibrator(mapping=FusedMapping(models=[model]))

    report = (await _guard(calibrator, embedder).arun(QUESTION)).report

    assert report.calibrated
    z = np.clip((-report.scores["degree"] + 0.3) / 0.1, -5.0, 5.0)
    assert report.confidence == pytest.approx(expit(z))
    assert report.degraded
    assert "fused calibration: reply_length missing, imputed its training mean" in (
        report.degraded_reasons
    )


async def test_the_fused_probability_drives_the_policy(embedder) -> None:
    doubtful = Calibrator(mapping=FusedMapping(models=[_model(["degree"], -6.0)]))
    result = await _guard(doubtful, embedder, policy="abstain", threshold=0.5).arun(QUESTION)
    assert result.report.decision == "abstain"
    assert result.report.confidence < 0.05 and result.report.raw_confidence is not None


# -- the command line ----------------------------------------------------------------------


def test_cli_fuses_pooled_records_and_prints_held_out_metrics(tmp_path: Path, capsys) -> None:
    out = tmp_path / "calib.json"
    argv = ["calibrate", "--fuse", "--features", "gnll,degree", "--folds", "3"]
    argv += ["--records", str(RESULTS / "countries" / "records.jsonl")]
    argv += ["--records", str(RESULTS / "nq" / "records.jsonl")]
    argv += ["--bootstrap", "50", "--alpha", "0.3", "--out", str(out)]

    assert main(argv) == 0

    printed = capsys.readouterr().out
    assert "900 questions from 2 files: 137 right, 763 wrong" in printed
    assert "held out (3-fold cross-fitted" in printed
    for text in ("AUROC", "smooth ECE", "ECE", "each score alone", "gnll", "degree"):
        assert text in printed
    assert "fused - best single" in printed and "risk control on the held-out" in printed
    assert "each file (held out, pooled model" in printed
    assert "sub-model without log-probabilities: 1 score, 900 questions; alone, held out" in printed
    assert "countries/records.jsonl: 120 right of 400, fused AUROC" in printed
    assert "nq/records.jsonl: 17 right of 500, fused AUROC" in printed
    saved = load_calibration(out)
    assert saved.fused and saved.n_fitted == 900 and saved.risk_control is not None
    held_out = saved.mapping.held_out
    assert held_out is not None and held_out.n_folds == 3
    assert held_out.auroc is not None and held_out.auroc > 0.8


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--features", "gnll"], "--features needs --fuse"),
        (["--fuse", "--score", "gnll"], "use --features, not --score"),
        (["--fuse", "--features", "gnll,nope"], "no score 'nope'"),
    ],
)
def test_cli_refuses_inconsistent_options(tmp_path: Path, capsys, extra, message) -> None:
    records = str(RESULTS / "countries" / "records.jsonl")
    argv = ["calibrate", "--records", records, *extra, "--out", str(tmp_path / "c.json")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_names_a_missing_records_file(tmp_path: Path, capsys) -> None:
    argv = ["calibrate", "--records", str(tmp_path / "none.jsonl"), "--fuse", "--out", "c.json"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
