"""Calibrators, their JSON files, risk-controlled thresholds, and the guard using them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from tests.unit.fake_backend import FakeBackend
from uq_guard import ConfigurationError, Guard, GuardConfig
from uq_guard.calibration import (
    Calibrator,
    IsotonicMapping,
    PlattMapping,
    clopper_pearson_upper,
    load_calibration,
)
from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.calibrators import (
    fit_calibrator,
    fit_isotonic,
    fit_platt,
    risk_controlled_threshold,
)


def logistic_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    return conf, (rng.random(n) < expit(4 * conf - 2)).astype(float)


# -- Clopper-Pearson -------------------------------------------------------------


def test_clopper_pearson_known_values() -> None:
    # no errors in n: the bound solves (1 - p)^n = delta
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(1 - 0.05**0.1, abs=1e-12)
    # the upper ends of the textbook two-sided 95% intervals (delta = 0.025 on one side)
    assert clopper_pearson_upper(5, 10, 0.025) == pytest.approx(0.8129, abs=1e-4)
    assert clopper_pearson_upper(1, 20, 0.025) == pytest.approx(0.2487, abs=1e-4)
    assert clopper_pearson_upper(3, 3, 0.1) == 1.0
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0


@pytest.mark.parametrize(
    ("errors", "n", "delta"), [(5, 3, 0.1), (-1, 3, 0.1), (0, 3, 0.0), (0, 3, 1)]
)
def test_clopper_pearson_refuses_bad_arguments(errors: int, n: int, delta: float) -> None:
    with pytest.raises(ConfigurationError):
        clopper_pearson_upper(errors, n, delta)


# -- fitting and applying ----------------------------------------------------------


def test_platt_recovers_a_logistic_curve() -> None:
    conf, correct = logistic_data(20_000)
    mapping = fit_platt(conf, correct).mapping
    assert isinstance(mapping, PlattMapping)
    assert mapping.slope == pytest.approx(4.0, abs=0.3)
    assert mapping.intercept == pytest.approx(-2.0, abs=0.2)


def test_platt_stays_finite_on_separable_and_one_class_data() -> None:
    conf = np.linspace(0, 1, 50)
    separable = fit_platt(conf, conf > 0.5)
    assert np.isfinite([separable.mapping.slope, separable.mapping.intercept]).all()
    assert separable.apply(0.9) > 0.9 > 0.1 > separable.apply(0.1)
    all_right = fit_platt(conf, np.ones(50))
    assert 0.9 < all_right.apply(0.2) < 1.0


def test_isotonic_is_scikit_learns_map() -> None:
    conf, correct = logistic_data(500, seed=1)
    calibrator = fit_isotonic(conf, correct, method="inv_entropy")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(conf, correct)
    grid = np.linspace(0, 1, 101)

    np.testing.assert_allclose(calibrator.apply(grid), reference.predict(grid), atol=1e-12)
    assert np.all(np.diff(calibrator.apply(grid)) >= 0)
    assert calibrator.method == "inv_entropy" and calibrator.kind == "isotonic"
    assert (calibrator.n_fitted, calibrator.n_correct) == (500, int(correct.sum()))


def test_apply_takes_a_float_or_an_array_of_confidences() -> None:
    calibrator = fit_calibrator(*logistic_data(300), kind="platt")
    assert isinstance(calibrator.apply(0.5), float)
    assert calibrator.apply([0.2, 0.5]).shape == (2,)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigurationError):
            calibrator.apply(bad)
    with pytest.raises(ConfigurationError, match="unknown calibrator kind"):
        fit_calibrator([0.1, 0.9], [0, 1], kind="beta")  # type: ignore[arg-type]


def test_a_score_calibrator_takes_any_real_input() -> None:
    gnll = np.linspace(2.0, 30.0, 40)  # an uncertainty, fitted on its negation
    correct = (gnll < 12.0).astype(int)
    calibrator = fit_calibrator(-gnll, correct, kind="isotonic", score="gnll")
    assert calibrator.score == "gnll" and calibrator.method is None
    assert calibrator.apply(-3.0) == pytest.approx(1.0) and calibrator.apply(-29.0) == 0.0
    with pytest.raises(ConfigurationError):
        calibrator.apply(float("inf"))
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        fit_calibrator(-gnll, correct, kind="platt")  # without score, input is a probability


# -- JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_json_round_trip(tmp_path: Path, kind: str) -> None:
    conf, correct = logistic_data(400)
    calibrator = fit_calibrator(conf, correct, kind=kind, method="inv_entropy")  # type: ignore[arg-type]
    control = risk_controlled_threshold(calibrator.apply(conf), correct, alpha=0.3)
    calibrator = calibrator.with_risk_control(control)

    path = calibrator.save(tmp_path / "nested" / "calib.json")
    loaded = load_calibration(path)

    assert loaded == calibrator == Calibrator.load(path)
    np.testing.assert_array_equal(loaded.apply(conf), calibrator.apply(conf))
    data = json.loads(path.read_text())
    assert data["format"] == "uq_guard.calibration" and data["version"] == 1
    assert data["mapping"]["kind"] == kind
    assert data["risk_control"]["alpha"] == 0.3


def _good() -> dict:
    return Calibrator(mapping=IsotonicMapping(x=[0.1, 0.9], y=[0.2, 0.8])).model_dump(mode="json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="something.else"), "not a uq_guard calibration file"),
        (lambda d: d.update(version=3), "version 3 is not supported"),
        (lambda d: d.update(version=0), "version 0 is not supported"),
        (lambda d: d["mapping"].update(y=[0.8, 0.2]), "non-decreasing"),
        (lambda d: d["mapping"].update(x=[0.9, 0.1]), "non-decreasing"),
        (lambda d: d["mapping"].update(y=[0.2]), "same length"),
        (lambda d: d["mapping"].update(y=[0.2, 1.5]), "mapping.isotonic.y.1"),
        (lambda d: d["mapping"].update(kind="beta"), "mapping"),
        (lambda d: d.update(mapping={"kind": "platt", "slope": "NaN", "intercept": 0}), "slope"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d.pop("mapping"), "mapping"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(tmp_path: Path, edit, message: str) -> None:
    data = _good()
    edit(data)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match=message):
        load_calibration(path)


def test_missing_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_calibration(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "uq_guard.calibration",\n oops}')
    with pytest.raises(ConfigurationError, match=r"not JSON \(line 2"):
        load_calibration(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="not a uq_guard calibration file"):
        load_calibration(listed)


# -- risk-controlled thresholds ----------------------------------------------------------


def test_risk_controlled_threshold_by_hand() -> None:
    # 40 questions, the 30 most confident right, the 10 least wrong; alpha 0.2, delta 0.1.
    # Answering the top k: bound(0 of 30) .074, bound(1 of 31) .120, (2 of 32) .158,
    # (3 of 33) .191, (4 of 34) .221 > 0.2: the top 33 (confidence >= 8/40) qualify.
    conf = np.arange(40, 0, -1) / 40
    correct = np.r_[np.ones(30), np.zeros(10)]

    control = risk_controlled_threshold(conf, correct, alpha=0.2, delta=0.1)

    assert control.feasible
    assert control.threshold == pytest.approx(8 / 40)
    assert (control.n_answered, control.n_errors) == (33, 3)
    assert control.coverage == pytest.approx(33 / 40)
    assert control.error_rate == pytest.approx(3 / 33)
    assert control.error_upper_bound == pytest.approx(clopper_pearson_upper(3, 33, 0.1))
    assert control.error_upper_bound <= 0.2 < clopper_pearson_upper(4, 34, 0.1)


def test_the_scan_stops_at_the_first_threshold_that_fails() -> None:
    # 15 right, then 4 wrong, then 60 right: the bound exceeds alpha around 19
    # answered and comes back under it later; a valid scan does not jump the gap.
    conf = np.arange(79, 0, -1) / 79
    correct = np.r_[np.ones(15), np.zeros(4), np.ones(60)]
    control = risk_controlled_threshold(conf, correct, alpha=0.2, delta=0.1)
    assert control.feasible and control.n_answered < 19
    assert clopper_pearson_upper(4, 79, 0.1) <= 0.2  # the tempting, invalid choice


def test_no_threshold_qualifies() -> None:
    few = risk_controlled_threshold([0.9, 0.8, 0.7], [1, 1, 1], alpha=0.1, delta=0.1)
    assert not few.feasible and few.threshold is None and few.coverage == 0.0
    assert "22 answered questions are needed" in few.reason

    rng = np.random.default_rng(0)
    coin = risk_controlled_threshold(rng.random(500), rng.integers(0, 2, 500), alpha=0.1)
    assert not coin.feasible and "no threshold qualifies" in coin.reason


@pytest.mark.parametrize(("alpha", "delta"), [(0.0, 0.1), (1.0, 0.1), (0.1, 0.0), (0.1, 1.5)])
def test_risk_control_refuses_bad_levels(alpha: float, delta: float) -> None:
    with pytest.raises(ConfigurationError):
        risk_controlled_threshold([0.1, 0.9], [0, 1], alpha=alpha, delta=delta)


def _held_out_violations(error_of, alpha: float, delta: float, splits: int) -> tuple[int, int]:
    """Draw calibration and test sets; count splits whose answered test error exceeds alpha."""
    rng = np.random.default_rng(12345)
    violations = found = 0
    for _ in range(splits):
        conf = rng.random(1500)
        correct = (rng.random(1500) >= error_of(conf)).astype(float)
        cal, test = slice(0, 500), slice(500, None)
        control = risk_controlled_threshold(conf[cal], correct[cal], alpha=alpha, delta=delta)
        if not control.feasible:
            continue
        found += 1
        answered = conf[test] >= control.threshold
        if answered.any() and 1 - correct[test][answered].mean() > alpha:
            violations += 1
    return violations, found


def test_held_out_answered_error_stays_under_alpha_at_the_promised_rate() -> None:
    alpha, delta, splits = 0.2, 0.1, 300
    # an informative score (error 1 - confidence) ...
    violations, found = _held_out_violations(lambda c: 1 - c, alpha, delta, splits)
    assert found > 0.8 * splits  # it does find thresholds
    assert violations <= delta * splits
    # ... and an uninformative one whose error (0.22) is just above alpha, where picking
    # the best of all thresholds would pass by chance about a third of the time
    violations, _ = _held_out_violations(lambda c: np.full_like(c, 0.22), alpha, delta, splits)
    assert violations <= delta * splits


# -- the guard loads a calibration ---------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def _constant(p: float, method: str | None) -> Calibrator:
    return Calibrator(method=method, mapping=IsotonicMapping(x=[0.0, 1.0], y=[p, p]))


async def test_guard_reports_the_calibrated_confidence(tmp_path: Path, embedder) -> None:
    path = _constant(0.37, "inv_entropy").save(tmp_path / "calib.json")
    backend = FakeBackend(paraphrases=["Which city is France's capital?"])
    guard = Guard(backend, embedder=embedder, n_perturbations=1, n_samples=2, calibration=path)

    report = (await guard.arun("What is the capital of France?")).report

    assert report.calibrated and report.confidence == pytest.approx(0.37)
    assert report.raw_confidence is not None and report.raw_confidence != pytest.approx(0.37)
    assert not report.degraded
    assert report.model_dump()["calibrated"] is True


async def test_calibrated_confidence_drives_the_policy(embedder) -> None:
    backend = FakeBackend(paraphrases=["Which city is France's capital?"])
    guard = Guard(
        backend,
        embedder=embedder,
        n_perturbations=1,
        n_samples=2,
        calibration=_constant(0.1, None),
        policy="abstain",
        threshold=0.5,
    )
    result = await guard.arun("What is the capital of France?")
    assert result.report.decision == "abstain" and result.report.confidence == pytest.approx(0.1)


async def test_a_calibration_for_another_method_is_not_applied(embedder) -> None:
    backend = FakeBackend()
    guard = Guard(
        backend,
        embedder=embedder,
        n_perturbations=0,
        n_samples=3,
        calibration=_constant(0.37, "inv_entropy"),
    )
    report = (await guard.arun("What is the capital of France?")).report
    assert report.method == "degree"
    assert not report.calibrated and report.raw_confidence is None
    assert report.degraded and "fitted on 'inv_entropy'" in report.degraded_reasons[-1]


async def test_a_score_calibrator_reads_that_score_from_the_report(embedder) -> None:
    backend = FakeBackend(paraphrases=["Which city is France's capital?"])
    calibrator = Calibrator(score="inv_entropy", mapping=PlattMapping(slope=1.0, intercept=0.0))
    guard = Guard(
        backend, embedder=embedder, n_perturbations=1, n_samples=2, calibration=calibrator
    )
    report = (await guard.arun("What is the capital of France?")).report
    expected = expit(-report.scores["inv_entropy"])
    assert report.calibrated and report.confidence == pytest.approx(expected)
    assert report.raw_confidence is not None and not report.degraded


async def test_a_score_calibrator_whose_score_is_missing_is_not_applied(embedder) -> None:
    calibrator = Calibrator(
        score="verbalized_confidence", mapping=PlattMapping(slope=1.0, intercept=0.0)
    )
    guard = Guard(FakeBackend(), embedder=embedder, n_perturbations=0, calibration=calibrator)
    report = (await guard.arun("What is the capital of France?")).report
    assert not report.calibrated and report.raw_confidence is None
    assert "reads score 'verbalized_confidence'" in report.degraded_reasons[-1]


async def test_without_calibration_nothing_changes(embedder) -> None:
    report = (await Guard(FakeBackend(), embedder=embedder, n_perturbations=0).arun("Hi?")).report
    assert not report.calibrated and report.raw_confidence is None


def test_guard_config_refuses_a_bad_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"calibration=.*does not exist"):
        GuardConfig(calibration=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(ConfigurationError, match=r"calibration=.*not a uq_guard calibration file"):
        GuardConfig(calibration=str(broken))
    good = _constant(0.5, None).save(tmp_path / "good.json")
    config = GuardConfig(calibration=good)
    assert GuardConfig.build(config, threshold=0.3).calibration == good
