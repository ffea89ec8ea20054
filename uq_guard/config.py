"""``GuardConfig``: every knob of a guarded call, validated at construction.

A bad value fails immediately with a message that names the field and the
allowed values, never halfway through a call. Types are not coerced: a count
takes an ``int`` (not ``True``, not ``"3"``), a switch a ``bool`` (not
``"yes"``), a real number an ``int`` or a ``float`` that is finite (no NaN, no
infinity). ``model_copy(update=...)`` validates its update like the
constructor does; every rejection is a :class:`ConfigurationError`.

The settings themselves are defined in :mod:`uq_guard.config_sections`, in
six sections; here are the rules across sections and how a config is built.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, model_validator

from uq_guard._exceptions import ConfigurationError
from uq_guard.config_sections import (
    DEFAULT_REFUSAL,
    MAX_TOKENS_CAP,
    POLICIES,
    SECTIONS,
    AdaptiveSettings,
    GAAPLexicon,
    Perturbation,
    PerturbationSettings,
    Policy,
    PolicySettings,
    SamplingSettings,
    ScoringSettings,
    SimilarityFn,
    SimilarityName,
    TransportSettings,
    flatten_sections,
)

__all__ = [
    "DEFAULT_REFUSAL",
    "MAX_TOKENS_CAP",
    "POLICIES",
    "SECTIONS",
    "AdaptiveSettings",
    "GAAPLexicon",
    "GuardConfig",
    "Perturbation",
    "PerturbationSettings",
    "Policy",
    "PolicySettings",
    "SamplingSettings",
    "ScoringSettings",
    "SimilarityFn",
    "SimilarityName",
    "TransportSettings",
]

_Section = TypeVar("_Section", bound=BaseModel)


# the sections in reverse: pydantic puts a later base's fields first, so the fields
# are dumped in the order of SECTIONS (sampling first)
class GuardConfig(
    TransportSettings,
    PolicySettings,
    AdaptiveSettings,
    ScoringSettings,
    PerturbationSettings,
    SamplingSettings,
):
    """How a guarded call samples, scores and decides.

    Its settings come in six sections, each defined (field by field, with
    its default and bounds) in :mod:`uq_guard.config_sections`:

    * ``sampling`` (:class:`SamplingSettings`): ``n_samples``, ``temperature``,
      ``max_tokens``;
    * ``perturbation_settings`` (:class:`PerturbationSettings`):
      ``n_perturbations``, ``perturbation`` and the ``gaap_*`` settings;
    * ``scoring`` (:class:`ScoringSettings`): ``similarity``, ``n_bootstrap``,
      ``seed``, ``cluster_threshold``, ``verbalized_confidence``,
      ``embedding_model``, ``device``, ``embedding_max_tokens``, ``embedding_backend``;
    * ``adaptive_sampling`` (:class:`AdaptiveSettings`): ``adaptive`` and the
      ``adaptive_*`` settings;
    * ``policy_settings`` (:class:`PolicySettings`): ``policy``, ``threshold``,
      ``abstain_message``, ``calibration``, ``strict``, ``include_samples``;
    * ``transport`` (:class:`TransportSettings`): ``max_concurrency``,
      ``timeout_s``, ``max_retries``, ``retry_wait_s``.

    The model is flat: every setting is a keyword and an attribute of its own
    (``GuardConfig(n_samples=3)``, ``config.n_samples``), and that is how it is
    stored and dumped. A section can also be given whole, as a dict or a
    section object, and read back whole::

        config = GuardConfig(sampling={"n_samples": 3}, policy="abstain")
        config.sampling  # SamplingSettings(n_samples=3, temperature=0.7, max_tokens=32)

    A setting given both flat and in its section is refused.

    ``threshold`` acts on one scale on every path (ALGORITHMS §2.9): with
    ``calibration`` the confidence is a fitted P(correct); without, it is
    label-free, near 1 when the answers agree and near 0 when they are
    unrelated, from Inv-Entropy when perturbed prompts were answered, else
    (``perturbation="none"``, ``n_perturbations=0``, none answered) from how
    much the reply and the prompt's own samples agree. With no sample back
    there is no confidence (None) and no policy acts.

    Cost: a call makes one reply request and ``n_perturbations + 1`` sample
    requests of ``n_samples`` answers each, plus one paraphrase request with
    ``perturbation="paraphrase"`` (or ``"gaap+paraphrase"``), and one
    substitutes request when GAAP uses the model lexicon. The default GAAP
    perturbation with WordNet makes no model call. ``verbalized_confidence``
    adds one request (the model is asked how sure it is of its reply).

    Adaptive sampling (``adaptive=True``) keeps that budget as a cap and
    samples in at most two batched rounds:

    1. the reply and ``adaptive_first_samples`` answers for *every* prompt
       (x_0 and each perturbation, so Inv-Entropy still sees them all);
    2. the remaining ``n_samples - adaptive_first_samples`` answers per
       prompt, only when round 1 did not settle the call.

    Round 1 settles the call when the answers agree: at least a share
    ``adaptive_agreement`` of the round-1 answers and the reply fall in one
    semantic cluster (single-link on embedding cosine at
    ``cluster_threshold``, the clusters of semantic entropy). With the default
    1.0 every answer must agree; if the model gave another answer with
    probability p, all k round-1 answers would miss it with probability
    (1 - p)^k (treating them as independent draws): with the default m = 9,
    k = 2 x 10 + 1 = 21, and a 15 % alternative slips through in under 4 %
    of calls. Optionally
    (``adaptive_margin``) round 1 also settles the call when its confidence
    is that far from ``threshold``, so the policy's decision would not flip.
    When a call stops early, every score comes from the round-1 samples;
    Inv-Entropy's bootstrap keeps one answer per prompt per draw, so its
    scale does not depend on how many answers each prompt got.
    """

    @model_validator(mode="before")
    @classmethod
    def _sections_to_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(name in SECTIONS for name in data):
            return flatten_sections(data)
        return data

    @model_validator(mode="after")
    def _adaptive_can_stop_early(self) -> GuardConfig:
        if not self.adaptive:
            return self
        if self.adaptive_first_samples >= self.n_samples:
            raise ValueError(
                f"adaptive_first_samples={self.adaptive_first_samples} must be smaller than "
                f"n_samples={self.n_samples} when adaptive=True (round 1 would already be "
                "the whole budget)"
            )
        if self.adaptive_agreement is None and self.adaptive_margin is None:
            raise ValueError(
                "adaptive=True needs a stopping rule: set adaptive_agreement or adaptive_margin"
            )
        return self

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> GuardConfig:
        """Validate a mapping (or config) as the constructor does; sections are taken too.

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        return super().model_validate(obj, *args, **kwargs)

    def model_copy(self, *, update: Any = None, deep: bool = False) -> GuardConfig:
        """A copy with ``update`` applied and validated (pydantic's own copy skips validation).

        ``update`` may give sections too (``{"sampling": {"n_samples": 4}}``).

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        if not update:
            return super().model_copy(deep=deep)
        return self.build(self, **dict(update))

    @classmethod
    def build(cls, config: GuardConfig | None = None, **overrides: Any) -> GuardConfig:
        """Make a config from an optional base and keyword overrides, validated.

        An override is a setting or a whole section (of which the settings it
        gives win over the base's). The settings given explicitly
        (``model_fields_set``) are those of the base plus the overrides, so
        integrations that tell explicit settings from defaults keep telling
        them apart.

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        if config is None:
            return cls(**overrides)
        if not overrides:
            return config
        try:
            overrides = flatten_sections(overrides)
        except ValueError as exc:
            raise ConfigurationError(f"invalid {cls.__name__}: {exc}") from None
        # the base's values as they are (not dumped: a Calibrator or a callable stays itself)
        explicit = {name: getattr(config, name) for name in config.model_fields_set}
        return cls(**{**explicit, **overrides})

    # --- the sections, read back (frozen; the explicit settings stay explicit) ---------

    @property
    def sampling(self) -> SamplingSettings:
        """``n_samples``, ``temperature``, ``max_tokens``."""
        return self._section(SamplingSettings)

    @property
    def perturbation_settings(self) -> PerturbationSettings:
        """``n_perturbations``, ``perturbation`` and the ``gaap_*`` settings."""
        return self._section(PerturbationSettings)

    @property
    def scoring(self) -> ScoringSettings:
        """``similarity``, ``n_bootstrap``, ``seed``, ``cluster_threshold`` and the others."""
        return self._section(ScoringSettings)

    @property
    def adaptive_sampling(self) -> AdaptiveSettings:
        """``adaptive`` and the ``adaptive_*`` settings."""
        return self._section(AdaptiveSettings)

    @property
    def policy_settings(self) -> PolicySettings:
        """``policy``, ``threshold``, ``abstain_message``, ``calibration`` and the others."""
        return self._section(PolicySettings)

    @property
    def transport(self) -> TransportSettings:
        """``max_concurrency``, ``timeout_s``, ``max_retries``, ``retry_wait_s``."""
        return self._section(TransportSettings)

    def _section(self, cls: type[_Section]) -> _Section:
        fields = cls.model_fields
        return cls.model_construct(
            _fields_set=self.model_fields_set & set(fields),
            **{name: getattr(self, name) for name in fields},
        )
