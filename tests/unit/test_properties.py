"""Property-based tests (hypothesis): generated configs and generated similarity matrices.

* ``GuardConfig`` from any dict of its documented fields either builds or
  raises :class:`ConfigurationError` naming a field; never another exception.
* ``inv_entropy`` on any symmetric, non-negative matrices with a unit diagonal
  (the inputs the scoring step builds) gives finite numbers in the documented
  ranges, down to one pair; an empty input is a ``ConfigurationError``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from uq_guard import ConfigurationError, GuardConfig
from uq_guard.config import MAX_TOKENS_CAP
from uq_guard.scoring.inv_entropy import inv_entropy

# few examples, no deadline: the machine is shared and these must stay cheap
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _similarity(texts: list[str]) -> np.ndarray:
    return np.eye(len(texts))


#: Values of every kind a careless or hostile caller might pass.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([np.float32(0.5), np.int64(3), np.nan, b"bytes", object()]),
)


def _field_values(name: str) -> st.SearchStrategy:
    """Plausible values of one field, mixed with junk."""
    plausible = {
        "policy": st.sampled_from(["annotate", "abstain", "raise", "best_of", "abstian"]),
        "perturbation": st.sampled_from(["gaap", "paraphrase", "gaap+paraphrase", "none", "x"]),
        "gaap_lexicon": st.sampled_from(["auto", "wordnet", "model", "user", "none"]),
        "gaap_edits": st.sampled_from(["preserving", "paper", "other"]),
        "similarity": st.sampled_from(["shifted_cosine", "abs_cosine", "euclid", _similarity]),
        "gaap_protected": st.lists(st.text(max_size=5), max_size=3).map(tuple),
        "gaap_substitutions": st.dictionaries(
            st.text(max_size=5), st.lists(st.text(max_size=5), max_size=2), max_size=2
        ),
        # a file path would touch the disk; None and a missing file are the cases here
        "calibration": st.sampled_from([None, "/nonexistent/uq_guard/calib.json"]),
        "embedding_model": st.sampled_from([None, "", " ", "all-MiniLM-L6-v2"]),
        "device": st.sampled_from([None, "", "cpu"]),
        "abstain_message": st.text(max_size=20),
    }.get(name)
    if plausible is None:
        plausible = st.one_of(
            st.integers(min_value=-5, max_value=200),
            st.floats(min_value=-1.0, max_value=10.0),
            st.booleans(),
        )
    if name == "calibration":
        return plausible  # junk strings would be read as paths
    return st.one_of(plausible, JUNK)


FIELDS = sorted(GuardConfig.model_fields)
NUMBER_TYPES = (int, float, float | None)
CONFIG_DICTS = st.fixed_dictionaries(
    {}, optional={name: _field_values(name) for name in FIELDS}
) | st.dictionaries(st.sampled_from([*FIELDS, "n_sample", "thresold"]), JUNK, max_size=4)


@PROPERTY
@given(CONFIG_DICTS)
def test_any_dict_of_settings_builds_or_names_a_bad_field(data: dict) -> None:
    try:
        config = GuardConfig(**data)
    except ConfigurationError as exc:
        message = str(exc)
        named = [name for name in [*data, *FIELDS] if name in message]
        assert named, message
        return
    for name, value in data.items():
        kind = GuardConfig.model_fields[name].annotation
        kept = getattr(config, name)
        if kind in NUMBER_TYPES:  # no coercion of a bool or a string into a number
            assert not isinstance(value, (bool, str, bytes)), (name, value)
        if kind is bool:
            assert isinstance(value, bool), (name, value)
        if isinstance(kept, float):
            assert math.isfinite(kept), (name, value)
    assert 1 <= config.max_tokens <= MAX_TOKENS_CAP


@PROPERTY
@given(CONFIG_DICTS, CONFIG_DICTS)
def test_model_copy_validates_like_the_constructor(base: dict, update: dict) -> None:
    try:
        config = GuardConfig(**base)
    except ConfigurationError:
        return
    expected = {**{k: getattr(config, k) for k in config.model_fields_set}, **update}
    try:
        copied = config.model_copy(update=update)
    except ConfigurationError:
        with pytest.raises(ConfigurationError):
            GuardConfig(**expected)
        return
    assert copied == GuardConfig(**expected)


# -- the scoring inputs -------------------------------------------------------------------


@st.composite
def similarity_matrices(draw, n: int) -> np.ndarray:
    """A symmetric ``(n, n)`` matrix in [0, 1] with a unit diagonal."""
    upper = draw(
        hnp.arrays(
            np.float64,
            (n, n),
            elements=st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False),
        )
    )
    matrix = np.triu(upper, 1)
    matrix = matrix + matrix.T
    np.fill_diagonal(matrix, 1.0)
    return matrix


@st.composite
def scoring_inputs(draw):
    n = draw(st.integers(min_value=1, max_value=9))
    sim_x = draw(similarity_matrices(n))
    sim_y = draw(similarity_matrices(n))
    groups = draw(st.none() | st.lists(st.integers(0, 3), min_size=n, max_size=n))
    n_bootstrap = draw(st.sampled_from([0, 1, 5]))
    unrelated = draw(st.sampled_from([0.0, 0.5]))
    return sim_x, sim_y, groups, n_bootstrap, unrelated


@PROPERTY
@given(scoring_inputs(), st.integers(0, 2**32 - 1))
def test_inv_entropy_is_finite_and_in_its_documented_ranges(inputs, seed: int) -> None:
    sim_x, sim_y, groups, n_bootstrap, unrelated = inputs
    n = sim_x.shape[0]

    result = inv_entropy(
        sim_x,
        sim_y,
        groups=groups,
        n_bootstrap=n_bootstrap,
        seed=seed,
        unrelated_similarity=unrelated,
    )

    scores = result.as_scores()
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert math.isfinite(result.h_same) and math.isfinite(result.h_apart)
    slack = 1e-9
    # each -q ln q is at most 1/e, over at most n diagonal entries
    assert -slack <= result.inv_entropy <= n / math.e + slack
    assert -slack <= result.conditional_entropy <= math.log(n) + slack
    assert 1.0 / n - slack <= result.max_output_mass <= 1.0 + slack
    assert -slack <= result.marginal_wasserstein <= 1.0 + slack
    assert result.confidence is None or 0.0 <= result.confidence <= 1.0
    assert result.n_pairs == n
    assert 1 <= result.n_groups <= n


@PROPERTY
@given(scoring_inputs())
def test_inv_entropy_is_deterministic_for_a_seed(inputs) -> None:
    sim_x, sim_y, groups, n_bootstrap, _ = inputs
    first = inv_entropy(sim_x, sim_y, groups=groups, n_bootstrap=n_bootstrap, seed=7)
    second = inv_entropy(sim_x, sim_y, groups=groups, n_bootstrap=n_bootstrap, seed=7)
    assert first == second


def test_one_pair_gives_numbers_and_no_confidence() -> None:
    result = inv_entropy(np.ones((1, 1)), np.ones((1, 1)), n_bootstrap=30)
    assert result.inv_entropy == 0.0 and result.max_output_mass == 1.0
    assert result.confidence is None


def test_an_empty_input_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        inv_entropy(np.zeros((0, 0)), np.zeros((0, 0)))


@PROPERTY
@given(st.integers(1, 6), st.floats(allow_nan=True, allow_infinity=True))
def test_a_non_finite_or_negative_entry_is_a_configuration_error(n: int, bad: float) -> None:
    if math.isfinite(bad) and bad >= 0:
        bad = -abs(bad) - 1.0
    sim = np.eye(n)
    sim[0, 0] = bad
    with pytest.raises(ConfigurationError):
        inv_entropy(sim, np.eye(n))
