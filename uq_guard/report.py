"""``UncertaintyReport``: what a guarded call found, JSON-clean.

Its ``model_dump()`` is what the integrations attach to replies (LangChain's
``response_metadata["uq_guard"]``, for instance).

Notes versus degradation
------------------------

A report says two kinds of things in words, and keeps them apart:

* ``degraded_reasons`` (and ``degraded=True``): the estimate lost information
  it was meant to have. Exactly these degrade a report: samples that failed
  (``n_failed > 0``); a perturber that raised or whose requests failed; fewer
  real perturbations than asked (``n_perturbations_real`` under
  ``n_perturbations_requested``), or none of them answered; no estimate at
  all (``confidence`` None); the scoring step failing (embedder or similarity
  errors); a requested verbalized confidence that is missing or unreadable; a
  calibration that could not be applied, or that had to impute a missing
  feature; a fallback model that failed. ``strict=True`` raises
  :class:`~uq_guard.DegradedResultError` on these, and only these.
* ``notes``: information that changes nothing in what was measured: the
  calibration was fitted under other guard settings, GAAP's lexicon had no
  substitutes for the key tokens (it still found every variant asked for),
  a long prompt had its key tokens chosen among its first words, a chat
  model without a temperature setting sampled at its own. They never set
  ``degraded`` and never make ``strict=True`` raise.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["answer", "abstain", "fallback", "best_of"]

#: Scores in ``UncertaintyReport.scores`` where a *higher* value means *more*
#: confidence; every other score is an uncertainty (higher = less sure).
CONFIDENCE_LIKE_SCORES = frozenset(
    {
        "max_output_mass",
        "verbalized_confidence",
        "reply_agreement",
        "reply_agreement_perturbed",
        "reply_word_agreement",
        "inv_entropy_confidence",
    }
)


def score_as_confidence(name: str, value: float) -> float:
    """A score turned the confidence way (higher = more sure): uncertainties negated."""
    return value if name in CONFIDENCE_LIKE_SCORES else -value


class Cost(BaseModel):
    """What the certainty cost, all calls of the guarded call together."""

    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UncertaintyReport(BaseModel):
    """The uncertainty of one reply and what the policy did with it.

    Attributes:
        confidence: 0..1, higher = trust the reply more, on one scale whatever
            the path (ALGORITHMS §2.9): a fitted P(correct) when
            ``calibrated``; otherwise label-free, near 1 when every answer
            agrees and near 0 when they are unrelated, from Inv-Entropy
            (``method="inv_entropy"``) or, without perturbed prompts
            answered, from how much the reply and the samples of the prompt
            agree (``method="degree"``). None when there is no estimate
            (no sample came back): the reply passes and ``degraded`` says why.
        uncertainty: the primary method's raw uncertainty (higher = less sure):
            ``scores["inv_entropy"]`` or ``scores["degree"]``; None with no estimate.
        method: the scorer that gave ``confidence``: ``inv_entropy``,
            ``degree`` (no perturbations, ``perturbation="none"`` or
            ``n_perturbations=0``, or none of them answered) or
            ``unavailable`` (no estimate).
        scores: every scorer that ran, by name (uncertainties except those in
            ``CONFIDENCE_LIKE_SCORES``).
        decision: what was returned: the reply, an abstention, a fallback
            model's reply or the best-supported sample.
        calibrated: True when ``confidence`` is a fitted P(correct) (``GuardConfig.calibration``).
        raw_confidence: the label-free confidence the calibrator mapped, when calibrated.
        reply: the text returned to the user (after the policy).
        original_reply: the model's own reply when the policy replaced it.
        perturbations: the perturbed prompts x_1..x_m that were used.
        perturbation_lexicon: where GAAP's substitutes came from (``wordnet``,
            ``model``, ``user``, ``none``, or a ``+``-joined union); None
            when the perturber uses no lexicon.
        n_perturbations_real: how many of ``perturbations`` are real,
            distinct variants (the rest repeat them to fill the m asked for).
        n_prompts / n_samples: prompts (x_0 included) and answers scored.
        n_failed: sample answers that failed and were left out.
        n_samples_requested: answers asked for over every sampling round
            (``n_samples + n_failed``); below ``n_samples_budget`` only when
            adaptive sampling stopped early.
        n_samples_budget: the cap, ``n_prompts × GuardConfig.n_samples``.
        sampling_rounds: batched sampling rounds run (1, or 2 with adaptive
            sampling when round 1 did not settle the call).
        adaptive: whether adaptive sampling was on.
        adaptive_stopped_early: True when adaptive sampling skipped round 2.
        adaptive_stop_reason: why it stopped (or went on), in words.
        degraded / degraded_reasons: the estimate lost information (see the
            module docstring for the list) but the reply stands.
        notes: information about the call that is not degradation (see the
            module docstring).
        fallback: the fallback model's own report, when it ran.
    """

    model_config = ConfigDict(extra="forbid")

    confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None
    uncertainty: float | None
    method: str
    scores: dict[str, float] = Field(default_factory=dict)
    decision: Decision = "answer"
    policy: str = "annotate"
    threshold: float = 0.5
    calibrated: bool = False
    raw_confidence: float | None = None
    reply: str = ""
    original_reply: str | None = None
    perturbation_method: str = "none"
    perturbations: list[str] = Field(default_factory=list)
    n_perturbations_requested: int = 0
    perturbation_lexicon: str | None = None
    n_perturbations_real: int = 0
    n_prompts: int = 0
    n_samples: int = 0
    n_failed: int = 0
    n_samples_requested: int = 0
    n_samples_budget: int = 0
    sampling_rounds: int = 0
    adaptive: bool = False
    adaptive_stopped_early: bool = False
    adaptive_stop_reason: str | None = None
    samples: list[list[str]] | None = None
    cost: Cost = Field(default_factory=Cost)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    fallback: UncertaintyReport | None = None

    @property
    def abstained(self) -> bool:
        return self.decision == "abstain"
