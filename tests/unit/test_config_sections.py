"""``GuardConfig``'s sections: read back, given whole, flat keywords unchanged (issue 12)."""

from __future__ import annotations

import json

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import (
    AdaptiveSettings,
    ConfigurationError,
    Guard,
    GuardConfig,
    PolicySettings,
    SamplingSettings,
    ScoringSettings,
)
from uq_guard.cli_settings import apply_settings, parse_settings
from uq_guard.config_sections import _INTEGER_FIELDS, _REAL_FIELDS, SECTIONS, section_of
from uq_guard.evaluation.eval_loop import _scoring_settings


def test_every_setting_is_in_exactly_one_section() -> None:
    homes: dict[str, list[str]] = {}
    for name, section in SECTIONS.items():
        for field in section.model_fields:
            homes.setdefault(field, []).append(name)

    assert set(homes) == set(GuardConfig.model_fields)
    assert {field: names for field, names in homes.items() if len(names) != 1} == {}
    assert all(section_of(field) == names[0] for field, names in homes.items())
    # GuardConfig's bases are the sections, its fields in the order of SECTIONS
    assert list(GuardConfig.model_fields) == [
        field for section in SECTIONS.values() for field in section.model_fields
    ]


def test_each_section_is_a_property_of_its_name_and_no_setting_shares_a_name() -> None:
    config = GuardConfig()

    for name, section in SECTIONS.items():
        assert name not in GuardConfig.model_fields
        assert isinstance(getattr(config, name), section)


def test_the_number_and_real_rules_name_only_real_settings() -> None:
    # the validators of the sections skip names no section has (check_fields=False)
    assert set(_INTEGER_FIELDS) | set(_REAL_FIELDS) <= set(GuardConfig.model_fields)


def test_sections_read_back_the_flat_values() -> None:
    config = GuardConfig(
        n_samples=3,
        temperature=0.4,
        n_perturbations=2,
        gaap_delta=0.6,
        n_bootstrap=7,
        adaptive=True,
        adaptive_first_samples=1,
        policy="abstain",
        threshold=0.3,
        max_retries=1,
    )

    for name, section in SECTIONS.items():
        view = getattr(config, name)
        for field in section.model_fields:
            assert getattr(view, field) == getattr(config, field), (name, field)
    assert config.sampling == SamplingSettings(n_samples=3, temperature=0.4, max_tokens=32)
    assert config.policy_settings.policy == "abstain" and config.policy == "abstain"
    assert config.perturbation_settings.n_perturbations == 2 and config.perturbation == "gaap"
    assert config.adaptive_sampling.adaptive is True and config.adaptive is True
    assert config.transport.max_retries == 1
    # a view keeps which settings were explicit, and is frozen like the config
    assert config.sampling.model_fields_set == {"n_samples", "temperature"}
    with pytest.raises(ValueError, match="frozen"):
        config.sampling.n_samples = 4  # type: ignore[misc]


def test_a_config_is_built_from_sections_as_from_flat_settings() -> None:
    flat = GuardConfig(n_samples=3, n_bootstrap=7, policy="abstain")

    by_dict = GuardConfig(sampling={"n_samples": 3}, scoring={"n_bootstrap": 7}, policy="abstain")
    by_object = GuardConfig(
        sampling=SamplingSettings(n_samples=3),
        scoring=ScoringSettings(n_bootstrap=7),
        policy_settings=PolicySettings(policy="abstain"),
    )

    assert by_dict == flat and by_object == flat
    # only what a section gives counts as given: the rest stay defaults
    assert by_dict.model_fields_set == by_object.model_fields_set == flat.model_fields_set
    # a section read off one config goes into another
    assert GuardConfig(sampling=flat.sampling).n_samples == 3


def test_sections_go_through_model_validate_build_model_copy_and_guard() -> None:
    base = GuardConfig(n_samples=3, policy="abstain")

    assert GuardConfig.model_validate({"sampling": {"n_samples": 4}}).n_samples == 4
    built = GuardConfig.build(base, sampling={"n_samples": 4})  # wins over the base's n_samples
    assert (built.n_samples, built.policy) == (4, "abstain")
    copied = base.model_copy(update={"sampling": {"temperature": 0.2}})
    assert (copied.n_samples, copied.temperature) == (3, 0.2)
    assert Guard(FakeBackend(), sampling={"n_samples": 2}).config.n_samples == 2


def test_flat_keywords_and_round_trips_are_unchanged() -> None:
    config = GuardConfig(n_samples=3, policy="abstain", gaap_protected=("Paris",))

    dumped = config.model_dump()
    assert set(dumped) == set(GuardConfig.model_fields)  # flat: no section in the dump
    assert GuardConfig(**dumped) == config
    assert GuardConfig.model_validate(json.loads(config.model_dump_json())) == config
    assert GuardConfig.model_validate_json(config.model_dump_json()) == config
    assert config.model_copy(update={"n_samples": 4}).n_samples == 4


def test_a_setting_given_flat_and_in_its_section_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"n_samples is given twice.*sampling\.n_samples"):
        GuardConfig(n_samples=3, sampling={"n_samples": 4})
    with pytest.raises(ConfigurationError, match="threshold is given twice"):
        GuardConfig(threshold=0.2, policy_settings=PolicySettings(threshold=0.3))
    with pytest.raises(ConfigurationError, match="n_samples is given twice"):
        GuardConfig.build(None, n_samples=3, sampling={"n_samples": 4})


def test_a_section_with_a_setting_of_another_section_says_where_it_lives() -> None:
    with pytest.raises(ConfigurationError) as caught:
        GuardConfig(sampling={"n_perturbations": 2})

    message = str(caught.value)
    assert "sampling.n_perturbations" in message
    assert "perturbation_settings" in message and "n_samples" in message
    with pytest.raises(ConfigurationError, match="takes a SamplingSettings or a dict"):
        GuardConfig(sampling=3)
    with pytest.raises(ConfigurationError, match="takes a SamplingSettings"):
        GuardConfig(sampling=ScoringSettings(n_bootstrap=1))
    with pytest.raises(ConfigurationError, match="unknown setting"):
        SamplingSettings(n_perturbations=2)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("sampling", "n_samples", True),
        ("sampling", "n_samples", "3"),
        ("sampling", "temperature", float("nan")),
        ("transport", "timeout_s", float("inf")),
        ("policy_settings", "strict", "yes"),
        ("policy_settings", "policy", "abstian"),
        ("adaptive_sampling", "adaptive", 1),
        ("scoring", "embedding_model", ""),
    ],
)
def test_a_section_is_as_strict_as_the_flat_settings(
    section: str, field: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=f"{field}="):
        GuardConfig(**{section: {field: value}})
    with pytest.raises(ConfigurationError, match=f"{field}="):
        SECTIONS[section](**{field: value})


def test_rules_across_sections_still_hold() -> None:
    with pytest.raises(ConfigurationError, match="adaptive_first_samples=3"):
        GuardConfig(
            sampling={"n_samples": 3},
            adaptive_sampling={"adaptive": True, "adaptive_first_samples": 3},
        )
    # a section alone knows nothing of the others' values
    assert AdaptiveSettings(adaptive=True, adaptive_first_samples=7).adaptive_first_samples == 7
    with pytest.raises(ConfigurationError, match="gaap_substitutions"):
        GuardConfig(perturbation_settings={"gaap_lexicon": "user"})


def test_set_reads_a_setting_by_its_section_too() -> None:
    settings = parse_settings(
        ["sampling.n_samples=3", "policy_settings.policy=abstain", "threshold=0.4"]
    )

    assert settings == {"n_samples": 3, "policy": "abstain", "threshold": 0.4}
    config = apply_settings(GuardConfig(n_samples=2), settings)
    assert (config.n_samples, config.policy, config.threshold) == (3, "abstain", 0.4)
    assert parse_settings(["n_samples=2", "sampling.n_samples=5"]) == {"n_samples": 5}


def test_set_refuses_an_unknown_section_or_a_setting_outside_its_section() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_settings(["samplin.n_samples=3"], option="--also")
    message = str(caught.value)
    assert "--also samplin.n_samples=3" in message and "'samplin'" in message
    assert "sampling" in message and "transport" in message

    with pytest.raises(ConfigurationError) as caught:
        parse_settings(["sampling.threshold=0.4"])
    message = str(caught.value)
    assert "'threshold' is not in section sampling" in message
    assert "policy_settings" in message and "n_samples" in message

    with pytest.raises(ConfigurationError, match="--set: invalid GuardConfig: n_samples=True"):
        apply_settings(None, parse_settings(["sampling.n_samples=true"]))


def test_an_eval_record_keeps_the_sections_it_was_scored_with() -> None:
    config = GuardConfig(n_bootstrap=7, similarity="abs_cosine")

    assert _scoring_settings(config) == config.scoring.model_dump()
    assert _scoring_settings(config)["n_bootstrap"] == 7

    def mine(texts: list[str]):
        raise NotImplementedError

    assert _scoring_settings(GuardConfig(similarity=mine))["similarity"] == "custom"
