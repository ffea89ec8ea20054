"""``GuardConfig``: every knob of a guarded call, validated at construction.

A bad value fails immediately with a message that names the field and the
allowed values, never halfway through a call. Types are not coerced: a count
takes an ``int`` (not ``True``, not ``"3"``), a switch a ``bool`` (not
``"yes"``), a real number an ``int`` or a ``float`` that is finite (no NaN, no
infinity). ``model_copy(update=...)`` validates its update like the
constructor does; every rejection is a :class:`ConfigurationError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import Calibrator, load_calibration

Policy = Literal["annotate", "abstain", "fallback", "raise", "best_of"]
Perturbation = Literal["gaap", "paraphrase", "gaap+paraphrase", "none"]
GAAPLexicon = Literal["auto", "wordnet", "model", "user", "none"]
SimilarityName = Literal["answer_words", "shifted_cosine", "abs_cosine"]
SimilarityFn = Callable[[list[str]], np.ndarray]

POLICIES: tuple[str, ...] = ("annotate", "abstain", "fallback", "raise", "best_of")
DEFAULT_REFUSAL = (
    "I'm not confident enough to answer that reliably. "
    "Please rephrase, add detail, or check an authoritative source."
)

#: The most tokens one sampled answer may ask for: far above any answer a guard
#: compares, and below what turns one request into a denial of service.
MAX_TOKENS_CAP = 32_768

#: Counts: a whole number, never a bool or a string.
_INTEGER_FIELDS = (
    "n_perturbations",
    "n_samples",
    "max_tokens",
    "adaptive_first_samples",
    "gaap_max_generations",
    "gaap_max_population",
    "n_bootstrap",
    "seed",
    "max_concurrency",
    "max_retries",
)
#: Real numbers: an int or a float, finite, never a bool or a string.
_REAL_FIELDS = (
    "temperature",
    "adaptive_agreement",
    "adaptive_margin",
    "gaap_key_ratio",
    "gaap_delta",
    "gaap_min_fidelity",
    "cluster_threshold",
    "threshold",
    "timeout_s",
    "retry_wait_s",
)


class GuardConfig(BaseModel):
    """How a guarded call samples, scores and decides.

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

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=True, allow_inf_nan=False
    )

    # --- sampling budget -------------------------------------------------
    n_perturbations: int = Field(
        9, ge=0, le=100, description="Perturbed prompts m (0 = samples only)."
    )
    n_samples: int = Field(5, ge=1, le=100, description="Answers r sampled per prompt.")
    temperature: float = Field(0.7, gt=0.0, le=5.0, description="Sampling temperature (never 0).")
    max_tokens: int = Field(
        128,
        ge=1,
        le=MAX_TOKENS_CAP,
        description=f"Cap on tokens of each sampled answer (at most {MAX_TOKENS_CAP}).",
    )
    adaptive: bool = Field(
        False,
        strict=True,
        description="Sample in two rounds and skip the second when round 1 already agrees.",
    )
    adaptive_first_samples: int = Field(
        2,
        ge=1,
        le=99,
        description="Answers per prompt in round 1 of adaptive sampling (< n_samples).",
    )
    adaptive_agreement: float | None = Field(
        1.0,
        gt=0.5,
        le=1.0,
        description="Stop after round 1 when this share of its answers (reply included) "
        "falls in one semantic cluster; None = never stop on agreement.",
    )
    adaptive_margin: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Also stop after round 1 when its confidence is at least this far "
        "from threshold; None = off.",
    )
    perturbation: Perturbation = Field(
        "gaap",
        description="How x_1..x_m are made: GAAP (no model call with WordNet), model "
        "paraphrase, both (m split between them) or none.",
    )

    # --- GAAP (ALGORITHMS.md §3) -------------------------------------------
    gaap_key_ratio: float = Field(
        0.3, gt=0.0, le=1.0, description="Share of the prompt's words taken as key tokens."
    )
    gaap_max_generations: int = Field(8, ge=0, le=100, description="Generations at most.")
    gaap_max_population: int = Field(64, ge=1, le=10_000, description="Population cap.")
    gaap_delta: float = Field(
        0.7, ge=0.0, le=1.0, description="Stop when the best fitness falls under this."
    )
    gaap_min_fidelity: float = Field(
        0.5, ge=0.0, le=1.0, description="Variants less similar to the prompt are dropped."
    )
    gaap_edits: Literal["preserving", "paper"] = Field(
        "preserving",
        description="preserving = never edit the words an answer depends on (operators, "
        "numbers, relation words, names), WordNet synonyms of the sense that fits the prompt "
        "only, delete only filler words; paper = the published GAAP (any sense, hypernyms, "
        "hyponyms, deletion).",
    )
    gaap_frames: bool = Field(
        True,
        strict=True,
        description="Add meaning-neutral edits (instruction frames, closings, punctuation "
        "and casing) to GAAP's operators.",
    )
    gaap_lexicon: GAAPLexicon = Field(
        "auto",
        description="Where substitutes come from; auto = WordNet if installed, else the model.",
    )
    gaap_protected: tuple[str, ...] = Field(
        (), description="Strings GAAP never changes (on top of numbers, quotes, code, names)."
    )
    gaap_substitutions: dict[str, list[str]] | None = Field(
        None, description="A user dict of substitutes (word -> replacements) for GAAP."
    )

    # --- scoring ---------------------------------------------------------
    similarity: SimilarityName | SimilarityFn = Field(
        "answer_words",
        description="How texts are compared: answer_words = prompts by shifted cosine of their "
        "embeddings, answers by the overlap of their content words (the default: it tells "
        "'54' from '56'); shifted_cosine or abs_cosine = embeddings for both; or a callable "
        "over texts returning a similarity matrix (both graphs).",
    )
    n_bootstrap: int = Field(
        30, ge=0, le=10_000, description="Bootstrap draws B (0 = plain value)."
    )
    seed: int = Field(0, ge=0, description="Seed of GAAP and the bootstrap (non-negative).")
    cluster_threshold: float = Field(
        0.85, ge=0.0, le=1.0, description="Cosine at or above which two answers share a meaning."
    )
    verbalized_confidence: bool = Field(
        False,
        strict=True,
        description="One extra call asking the model how sure it is of its reply (0-100); "
        "reported as scores['verbalized_confidence'] in [0, 1].",
    )

    # --- embeddings ------------------------------------------------------
    embedding_model: str | None = Field(
        None, description="sentence-transformers name or path; None = bundled all-MiniLM-L6-v2."
    )
    device: str | None = Field(None, description="'cuda', 'mps', 'cpu' or None for automatic.")

    # --- policy ----------------------------------------------------------
    policy: Policy = "annotate"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Act when confidence < threshold.")
    abstain_message: str = DEFAULT_REFUSAL
    calibration: str | Path | Calibrator | None = Field(
        None,
        description="A calibration JSON file (uq_guard.calibration) or a Calibrator: "
        "confidence becomes the fitted P(correct) and reports say calibrated=True.",
    )

    # --- cost control and robustness ---------------------------------------
    max_concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float | None = Field(120.0, gt=0, description="Per model call; None = no limit.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of retryable failures only.")
    retry_wait_s: float = Field(0.5, ge=0.0, description="First backoff; doubles each retry.")
    strict: bool = Field(
        False,
        strict=True,
        description="Raise DegradedResultError when the report is degraded (not on notes).",
    )
    include_samples: bool = Field(
        False, strict=True, description="Put the sampled answers in the report."
    )

    @field_validator(*_INTEGER_FIELDS, mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if value is None:
                return value  # the field's own type says whether None is allowed
            raise ValueError(f"should be an int, got {type(value).__name__}")
        return int(value)

    @field_validator(*_REAL_FIELDS, mode="before")
    @classmethod
    def _finite_number(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"should be a number (int or float), got {type(value).__name__}")
        number = float(value)
        if math.isnan(number):
            raise ValueError("NaN is not allowed; give a finite number")
        if math.isinf(number):
            raise ValueError("infinity is not allowed; give a finite number")
        return number

    @field_validator("embedding_model", "device", mode="before")
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("should name something or be None, not an empty string")
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _known_policy(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; choose one of {', '.join(POLICIES)}")
        return value

    @field_validator("calibration")
    @classmethod
    def _readable_calibration(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            load_calibration(value)  # a missing or broken file fails here, not on the first call
        return value

    @model_validator(mode="after")
    def _user_lexicon_has_a_dict(self) -> GuardConfig:
        if self.gaap_lexicon == "user" and not self.gaap_substitutions:
            raise ValueError("gaap_lexicon='user' needs gaap_substitutions (a dict of substitutes)")
        return self

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

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> GuardConfig:
        """Validate a mapping (or config) as the constructor does.

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None

    def model_copy(self, *, update: Any = None, deep: bool = False) -> GuardConfig:
        """A copy with ``update`` applied and validated (pydantic's own copy skips validation).

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        if not update:
            return super().model_copy(deep=deep)
        return self.build(self, **dict(update))

    @classmethod
    def build(cls, config: GuardConfig | None = None, **overrides: Any) -> GuardConfig:
        """Make a config from an optional base and keyword overrides, validated.

        The settings given explicitly (``model_fields_set``) are those of the
        base plus the overrides, so integrations that tell explicit settings
        from defaults keep telling them apart.

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        if config is None:
            return cls(**overrides)
        if not overrides:
            return config
        # the base's values as they are (not dumped: a Calibrator or a callable stays itself)
        explicit = {name: getattr(config, name) for name in config.model_fields_set}
        return cls(**{**explicit, **overrides})


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(GuardConfig.model_fields))
            msg = f"unknown setting; known settings are: {known}"
        elif err["type"] == "finite_number":
            msg = "NaN and infinity are not allowed; give a finite number"
        if not err["loc"]:
            # a rule across fields names them itself; the input would be the whole config
            parts.append(msg)
            continue
        where = ".".join(str(p) for p in err["loc"])  # the field first
        parts.append(f"{where}={err.get('input')!r}: {msg}")
    return "invalid GuardConfig: " + "; ".join(parts)
