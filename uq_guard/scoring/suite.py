"""Every scorer over one guarded call's samples, from a single embedding batch.

:func:`score_samples` is the scoring step of the engine: it embeds the
distinct texts once, builds the prompt and answer similarity graphs, and runs
Inv-Entropy, the sample-only baselines, (when log-probabilities came back)
the white-box scores, and three plain agreement scores (confidences, higher =
surer): ``reply_agreement``, the mean embedding similarity of the reply to the
samples of x_0, ``reply_agreement_perturbed``, to the samples of every prompt,
and ``reply_word_agreement``, the reply's content words against every
sample's (:mod:`uq_guard.scoring.answer_words`).

The default similarity, ``"answer_words"``, compares prompts by the paper's
shifted cosine of their embeddings and answers by the overlap of their
content words: the answer graph (Inv-Entropy's S_Y, the x_0 graph of Degree,
EigV and Eccentricity) then tells "54" from "56". ``"shifted_cosine"`` and
``"abs_cosine"`` use the embeddings for both graphs.

It also picks the reported confidence: Inv-Entropy's
label-free confidence when there were perturbations, the agreement of the
reply with the samples of x_0 otherwise (method ``"degree"``). Both are on one
scale (ALGORITHMS §2.9, "One scale"): "every answer the same" near 1, "every
answer unrelated" near 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from uq_guard.embeddings import Embedder
from uq_guard.scoring.answer_words import answer_word_similarity, reply_word_agreement
from uq_guard.scoring.baselines import (
    agreement_confidence,
    degree_uncertainty,
    eccentricity_uncertainty,
    eigv_uncertainty,
    largest_cluster_share,
    semantic_entropy,
    semantic_volume,
    support,
)
from uq_guard.scoring.inv_entropy import inv_entropy
from uq_guard.scoring.similarity import check_similarity_matrix, cosine_matrix, similarity_matrix
from uq_guard.scoring.whitebox import entropy_area_score, gnll, max_token_nll, mean_token_entropy

SimilarityOption = str | Callable[[list[str]], np.ndarray]

#: What two unrelated answers (cosine 0) score under each named similarity:
#: the "every answer unrelated" reference of the label-free confidence.
UNRELATED_SIMILARITY = {"shifted_cosine": 0.5, "abs_cosine": 0.0, "answer_words": 0.0}

#: The similarity that compares answers by their words (and prompts by shifted cosine).
ANSWER_WORDS = "answer_words"


def unrelated_similarity(similarity: SimilarityOption) -> float:
    """What two unrelated answers score under ``similarity``; 0 for a user callable."""
    if isinstance(similarity, str):
        return UNRELATED_SIMILARITY.get(similarity, 0.0)
    return 0.0


@dataclass
class SampleScores:
    """What the scoring step found.

    Attributes:
        scores: every score that ran, by name.
        confidence: the reported confidence in [0, 1], or None when nothing
            could be scored (no answer to compare).
        uncertainty: the primary method's uncertainty (NaN without a confidence).
        method: which scorer ``confidence`` comes from.
        candidate_support: support of the reply (first) and of each sample
            of x_0 among those samples, for the best-of policy.
        answer_agreement: share of all the answers (every prompt's, and the
            reply) in the biggest semantic cluster at ``cluster_threshold``;
            the stopping statistic of adaptive sampling. None when no answer
            came back.
        degraded_reasons: what the scoring lost (no answer to score, the
            original prompt's samples all failed, no perturbed prompt
            answered); each degrades the report.
    """

    scores: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    uncertainty: float = float("nan")
    method: str = "unavailable"
    candidate_support: np.ndarray = field(default_factory=lambda: np.zeros(0))
    answer_agreement: float | None = None
    degraded_reasons: list[str] = field(default_factory=list)


def score_samples(
    *,
    embedder: Embedder,
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    reply: str,
    similarity: SimilarityOption = ANSWER_WORDS,
    n_bootstrap: int = 30,
    seed: int = 0,
    cluster_threshold: float = 0.85,
    reply_logprobs: Sequence[float] | None = None,
    reply_entropies: Sequence[float] | None = None,
) -> SampleScores:
    """Score one call's samples.

    Args:
        embedder: turns texts into unit vectors (one batch of distinct texts).
        prompts: x_0 (the user's prompt) then the perturbations.
        answers: for each prompt, the answers that came back (may be short or empty).
        reply: the reply the user gets (scored for best-of support).
        similarity: a named similarity (``"answer_words"``, ``"shifted_cosine"``,
            ``"abs_cosine"``) or a callable over texts (then used for both graphs).
        n_bootstrap: Inv-Entropy bootstrap draws (used when a prompt has >1 answer).
        seed: bootstrap seed.
        cluster_threshold: cosine for semantic-entropy clusters.
        reply_logprobs / reply_entropies: per-token values of the reply, if any.
    """
    result = SampleScores()
    _add_whitebox(result.scores, reply_logprobs, reply_entropies)

    pair_prompt = [k for k, group in enumerate(answers) for _ in group]
    pair_answer = [a for group in answers for a in group]
    if not pair_answer:
        result.degraded_reasons.append("no sampled answer came back: nothing to score")
        return result

    texts = list(dict.fromkeys([*prompts, *pair_answer, reply]))
    position = {text: i for i, text in enumerate(texts)}
    embeddings = embedder.encode(texts)
    sim = _similarity(texts, embeddings, similarity)
    answer_sim = answer_word_similarity(texts, prompts[0]) if similarity == ANSWER_WORDS else sim

    prompt_rows = [position[prompts[k]] for k in pair_prompt]
    answer_rows = [position[a] for a in pair_answer]
    agreeing_rows = [position[reply], *answer_rows]
    result.answer_agreement = largest_cluster_share(
        cosine_matrix(embeddings[agreeing_rows]), cluster_threshold
    )
    unrelated = unrelated_similarity(similarity)
    inv = inv_entropy(
        sim[np.ix_(prompt_rows, prompt_rows)],
        answer_sim[np.ix_(answer_rows, answer_rows)],
        groups=pair_prompt,
        n_bootstrap=n_bootstrap if len(pair_answer) > len(set(pair_prompt)) else 0,
        seed=seed,
        unrelated_similarity=unrelated,
    )
    result.scores.update(inv.as_scores())

    reply_row = position[reply]
    sim_row = None if similarity == ANSWER_WORDS else sim[reply_row, answer_rows]
    result.scores["reply_agreement_perturbed"] = float(np.mean(sim[reply_row, answer_rows]))
    word_agreement = reply_word_agreement(reply, pair_answer, prompts[0])
    if word_agreement is not None:
        result.scores["reply_word_agreement"] = word_agreement
    x0_rows = [position[a] for a in answers[0]]
    sample_only_confidence = None
    if x0_rows:
        sim_x0 = answer_sim[np.ix_(x0_rows, x0_rows)]
        result.scores.update(
            degree=degree_uncertainty(sim_x0),
            eigv=eigv_uncertainty(sim_x0),
            eccentricity=eccentricity_uncertainty(sim_x0),
            semantic_entropy=semantic_entropy(
                cosine_matrix(embeddings[x0_rows]), cluster_threshold
            ),
            semantic_volume=semantic_volume(embeddings[x0_rows]),
            reply_agreement=float(np.mean(sim[reply_row, x0_rows])),
        )
        candidate_rows = [position[reply], *x0_rows]
        candidate_sim = answer_sim[np.ix_(candidate_rows, candidate_rows)]
        result.candidate_support = support(candidate_sim)
        # The reply is one of the answers compared: the confidence is about what the user
        # gets, and with one sample (r = 1) the reply and that sample still make a pair.
        sample_only_confidence = agreement_confidence(candidate_sim, unrelated)
    else:
        result.degraded_reasons.append(
            "every sample of the original prompt failed: sample-only baselines were skipped"
        )
    distinct_prompts = sorted({position[p] for p in prompts})
    if len(distinct_prompts) > 1:
        result.scores["prompt_semantic_volume"] = semantic_volume(embeddings[distinct_prompts])

    if len(set(pair_prompt)) > 1 and inv.confidence is not None:
        result.scores["inv_entropy_confidence"] = inv.confidence
        result.method = "inv_entropy"
        result.confidence = (inv.confidence + _reply_support(result.scores, sim_row, unrelated)) / 2
        result.uncertainty = inv.inv_entropy
    elif sample_only_confidence is not None:
        result.method = "degree"
        result.uncertainty = result.scores["degree"]
        result.confidence = sample_only_confidence
        if len(prompts) > 1:
            result.degraded_reasons.append(
                "perturbed prompts got no answers: confidence from the agreement of the "
                "reply and the prompt's samples (method degree)"
            )
    else:
        result.degraded_reasons.append("no answer to the original prompt: no confidence")
    return result


def _reply_support(
    scores: dict[str, float], reply_similarity: np.ndarray | None, unrelated: float
) -> float:
    """How much the samples agree with the reply, in [0, 1]: half the Inv-Entropy path's confidence.

    Inv-Entropy's label-free confidence (ALGORITHMS §2.9, kept as the score
    ``inv_entropy_confidence``) reads the samples only: a greedy reply that
    no sample agrees with would still get 1 when the samples agree with each
    other. So the reported confidence is the mean of it and this support:
    ``reply_word_agreement`` under ``answer_words`` (``reply_similarity``
    None), else the reply's mean similarity to every sample, with ``u``
    (what two unrelated answers score) mapped to 0. Both ends are kept:
    every answer and the reply the same gives 1, all unrelated gives 0.
    Measured in ``benchmarks/results/README.md``.
    """
    if reply_similarity is None:
        return scores["reply_word_agreement"]
    mean = float(np.mean(reply_similarity))
    return float(np.clip((mean - unrelated) / (1.0 - unrelated), 0.0, 1.0))


def _similarity(texts: list[str], embeddings: np.ndarray, option: SimilarityOption) -> np.ndarray:
    if callable(option):
        return check_similarity_matrix(
            option(texts), len(texts), getattr(option, "__name__", "similarity")
        )
    return similarity_matrix(embeddings, "shifted_cosine" if option == ANSWER_WORDS else option)


def _add_whitebox(
    scores: dict[str, float],
    logprobs: Sequence[float] | None,
    entropies: Sequence[float] | None,
) -> None:
    if logprobs:
        scores["gnll"] = gnll(logprobs)
        scores["max_token_nll"] = max_token_nll(logprobs)
    if entropies:
        scores["mean_token_entropy"] = mean_token_entropy(entropies)
        scores["entropy_area_score"] = entropy_area_score(entropies)
