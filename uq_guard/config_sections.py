"""The sections of :class:`~uq_guard.GuardConfig`: each setting, defined once, in its group.

``GuardConfig`` is one flat model made of six sections (it inherits their
fields, so ``config.n_samples`` and ``GuardConfig(n_samples=3)`` stay as they
are); :data:`SECTIONS` names them and is the one place that says which
setting belongs to which:

* ``sampling`` (:class:`SamplingSettings`): how each prompt's answers are drawn;
* ``perturbation_settings`` (:class:`PerturbationSettings`): how x_1..x_m are
  made, GAAP's knobs included;
* ``scoring`` (:class:`ScoringSettings`): how texts are compared and scored;
* ``adaptive_sampling`` (:class:`AdaptiveSettings`): the two-round budget;
* ``policy_settings`` (:class:`PolicySettings`): what is done with the
  confidence and what the caller gets back;
* ``transport`` (:class:`TransportSettings`): concurrency, timeouts, retries.

To add a setting, add its field to its section here (and its name to
``_INTEGER_FIELDS`` or ``_REAL_FIELDS`` if it is a count or a real number);
a rule across sections goes on ``GuardConfig`` in :mod:`uq_guard.config`.
A section validates like ``GuardConfig`` (nothing coerced, no NaN or infinity)
and is frozen; ``config.sampling`` and the others read one back.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from uq_guard._exceptions import ConfigurationError
from uq_guard._onnx_embedding import backend_installed
from uq_guard.calibration import Calibrator, load_calibration
from uq_guard.embeddings import EmbeddingBackend
from uq_guard.remote_embedding import checked_embedding_model

__all__ = [
    "DEFAULT_REFUSAL",
    "MAX_TOKENS_CAP",
    "POLICIES",
    "SECTIONS",
    "AdaptiveSettings",
    "PerturbationSettings",
    "PolicySettings",
    "SamplingSettings",
    "ScoringSettings",
    "TransportSettings",
    "flatten_sections",
    "section_of",
]

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
    "gaap_pairs_per_generation",
    "n_bootstrap",
    "seed",
    "max_concurrency",
    "max_retries",
    "embedding_max_tokens",
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


class _Settings(BaseModel):
    """What every section and ``GuardConfig`` share: strict validation, ConfigurationError."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=True, allow_inf_nan=False
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, type(self))) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Validate a mapping as the constructor does.

        Raises:
            ConfigurationError: naming each bad field, its value and what is allowed.
        """
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, cls)) from None

    def model_copy(self, *, update: Any = None, deep: bool = False) -> Any:
        """A copy with ``update`` applied and validated (pydantic's own copy skips validation)."""
        if not update:
            return super().model_copy(deep=deep)
        explicit = {name: getattr(self, name) for name in self.model_fields_set}
        return type(self)(**{**explicit, **dict(update)})

    @field_validator(*_INTEGER_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if value is None:
                return value  # the field's own type says whether None is allowed
            raise ValueError(f"should be an int, got {type(value).__name__}")
        return int(value)

    @field_validator(*_REAL_FIELDS, mode="before", check_fields=False)
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

    @field_validator("embedding_model", "device", mode="before", check_fields=False)
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("should name something or be None, not an empty string")
        return value


class SamplingSettings(_Settings):
    """How each prompt's answers are drawn (section ``sampling``)."""

    n_samples: int = Field(5, ge=1, le=100, description="Answers r sampled per prompt.")
    temperature: float = Field(0.7, gt=0.0, le=5.0, description="Sampling temperature (never 0).")
    max_tokens: int = Field(
        32,
        ge=1,
        le=MAX_TOKENS_CAP,
        description="Cap on tokens of each sampled answer, never the reply's (it keeps the "
        f"model's or call's own, as best_of's x0 samples do); at most {MAX_TOKENS_CAP}.",
    )


class PerturbationSettings(_Settings):
    """How the perturbed prompts x_1..x_m are made (section ``perturbation_settings``).

    GAAP's settings are those of ALGORITHMS.md §3.
    """

    n_perturbations: int = Field(
        9, ge=0, le=100, description="Perturbed prompts m (0 = samples only)."
    )
    perturbation: Perturbation = Field(
        "gaap",
        description="How x_1..x_m are made: GAAP (no model call with WordNet), model "
        "paraphrase, both (m split between them) or none.",
    )
    gaap_key_ratio: float = Field(
        0.3, gt=0.0, le=1.0, description="Share of the prompt's words taken as key tokens."
    )
    gaap_max_generations: int = Field(8, ge=0, le=100, description="Generations at most.")
    gaap_max_population: int = Field(64, ge=1, le=10_000, description="Population cap.")
    gaap_pairs_per_generation: int = Field(
        2,
        ge=1,
        le=1_000,
        description="Crossovers per generation: each makes 2 children and 2 mutants, "
        "every new one a prompt to embed.",
    )
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

    @model_validator(mode="after")
    def _user_lexicon_has_a_dict(self) -> Any:
        if self.gaap_lexicon == "user" and not self.gaap_substitutions:
            raise ValueError("gaap_lexicon='user' needs gaap_substitutions (a dict of substitutes)")
        return self


class ScoringSettings(_Settings):
    """How texts are compared and scored (section ``scoring``)."""

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
    embedding_model: Annotated[str | None, AfterValidator(checked_embedding_model)] = Field(
        None,
        description="sentence-transformers name or path; None = bundled all-MiniLM-L6-v2; or "
        "'openai:URL#model' for an OpenAI-compatible /embeddings server (key from "
        "$UQ_GUARD_EMBEDDING_API_KEY; the server's own truncation and precision then apply, "
        "not embedding_max_tokens, embedding_backend or device).",
    )
    device: str | None = Field(None, description="'cuda', 'mps', 'cpu' or None for automatic.")
    embedding_max_tokens: int | None = Field(
        64,
        ge=8,
        le=MAX_TOKENS_CAP,
        description="Word pieces of each text the embedder reads, the rest cut (answers agree "
        "or not in their first sentences); None = the model's own limit (256 for MiniLM).",
    )
    embedding_backend: Annotated[EmbeddingBackend, AfterValidator(backend_installed)] = Field(
        "auto",
        description="auto (int8 ONNX on CPU when onnxruntime is installed, torch elsewhere), "
        "torch, or onnx-int8: the embedding model exported once to int8 ONNX (cached) and "
        "run by ONNX Runtime on CPU.",
    )


class AdaptiveSettings(_Settings):
    """Adaptive sampling: two rounds, the second only when needed (section ``adaptive_sampling``).

    The rules that also read ``n_samples`` are on ``GuardConfig``.
    """

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


class PolicySettings(_Settings):
    """What is done with the confidence, and what the caller gets (section ``policy_settings``)."""

    policy: Policy = "annotate"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Act when confidence < threshold.")
    abstain_message: str = DEFAULT_REFUSAL
    calibration: str | Path | Calibrator | None = Field(
        None,
        description="A calibration JSON file (uq_guard.calibration) or a Calibrator: "
        "confidence becomes the fitted P(correct) and reports say calibrated=True.",
    )
    strict: bool = Field(
        False,
        strict=True,
        description="Raise DegradedResultError when the report is degraded (not on notes).",
    )
    include_samples: bool = Field(
        False, strict=True, description="Put the sampled answers in the report."
    )

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


class TransportSettings(_Settings):
    """Cost control and robustness of the model calls (section ``transport``)."""

    max_concurrency: int = Field(
        64, ge=1, le=1024, description="Model requests in flight, all calls of a wrapper together."
    )
    timeout_s: float | None = Field(120.0, gt=0, description="Per model call; None = no limit.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of retryable failures only.")
    retry_wait_s: float = Field(0.5, ge=0.0, description="First backoff; doubles each retry.")


#: The sections by name, in reading order: the name is both the keyword that
#: takes a section (``GuardConfig(sampling={"n_samples": 3})``) and the property
#: that reads one back (``config.sampling``); a section's fields are its settings.
SECTIONS: dict[str, type[_Settings]] = {
    "sampling": SamplingSettings,
    "perturbation_settings": PerturbationSettings,
    "scoring": ScoringSettings,
    "adaptive_sampling": AdaptiveSettings,
    "policy_settings": PolicySettings,
    "transport": TransportSettings,
}


def section_of(field: str) -> str | None:
    """The name of the section that holds ``field``; None for no setting."""
    return next((name for name, cls in SECTIONS.items() if field in cls.model_fields), None)


def flatten_sections(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with each section given by name spread into its fields.

    A section is a dict of its settings or a section object (of which only the
    settings given explicitly count). Values are not checked here: GuardConfig
    checks them as if they had been given flat.

    Raises:
        ValueError: a section of another kind, a name that is not in its
            section, or a setting given both flat and in its section.
    """
    flat = {name: value for name, value in settings.items() if name not in SECTIONS}
    for name, section in settings.items():
        if name not in SECTIONS:
            continue
        cls = SECTIONS[name]
        if isinstance(section, cls):
            given = {field: getattr(section, field) for field in section.model_fields_set}
        elif isinstance(section, Mapping):
            given = dict(section)
        else:
            raise ValueError(
                f"{name} takes a {cls.__name__} or a dict of its settings, "
                f"got {type(section).__name__}"
            )
        for field, value in given.items():
            if field not in cls.model_fields:
                home = section_of(str(field))
                hint = f" ({field} is in {home})" if home else ""
                raise ValueError(
                    f"{name}.{field}: not a setting of {name}{hint}; its settings are: "
                    f"{', '.join(cls.model_fields)}"
                )
            if field in flat:
                raise ValueError(f"{field} is given twice: as {field} and as {name}.{field}")
            flat[field] = value
    return flat


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            msg = f"unknown setting; known settings are: {known}"
            if model not in SECTIONS.values():
                msg += f"; or a section: {', '.join(SECTIONS)}"
        elif err["type"] == "finite_number":
            msg = "NaN and infinity are not allowed; give a finite number"
        if not err["loc"]:
            # a rule across fields names them itself; the input would be the whole config
            parts.append(msg)
            continue
        where = ".".join(str(p) for p in err["loc"])  # the field first
        parts.append(f"{where}={err.get('input')!r}: {msg}")
    return f"invalid {model.__name__}: " + "; ".join(parts)
