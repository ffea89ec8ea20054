"""Re-scoring stored records from their texts, with other scoring settings; no model call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uq_guard.calibration import Calibrator
from uq_guard.embeddings import Embedder, shared_embedder
from uq_guard.evaluation.records import EvalRecord
from uq_guard.scoring.suite import score_samples

__all__ = ["rescore"]


def rescore(
    records: Sequence[EvalRecord],
    *,
    embedder: Embedder | None = None,
    similarity: Any = None,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    cluster_threshold: float | None = None,
    calibrator: Calibrator | None = None,
) -> list[EvalRecord]:
    """Recompute every score of ``records`` from their stored texts; no model is called.

    Settings left as None keep each record's own (``record.scoring``), so
    ``rescore(records)`` reproduces the stored scores. Scores that cannot be
    recomputed from texts (e.g. a verbalized confidence from an extra call)
    are kept as they were. Failed records are returned unchanged.

    Args:
        records: records of an eval run.
        embedder: defaults to the shared embedder of the records' embedding model.
        similarity / n_bootstrap / seed / cluster_threshold: scoring settings
            (see :class:`~uq_guard.GuardConfig`).
        calibrator: applied to the new scores as the guard applies it; without
            one the records' confidence is the new label-free one (a stored
            calibration read the old scores, so it is not kept).

    Returns:
        new records with ``scores``, ``confidence``, ``calibrated``,
        ``raw_confidence``, ``method`` and ``scoring`` replaced.
    """
    rescored = []
    for record in records:
        if not record.ok or not record.prompts:
            rescored.append(record)
            continue
        stored = record.scoring
        settings = {
            "similarity": similarity if similarity is not None else stored.get("similarity"),
            "n_bootstrap": n_bootstrap if n_bootstrap is not None else stored.get("n_bootstrap"),
            "seed": seed if seed is not None else stored.get("seed", 0),
            "cluster_threshold": cluster_threshold
            if cluster_threshold is not None
            else stored.get("cluster_threshold"),
        }
        settings = {
            k: v
            for k, v in settings.items()
            if v is not None and not (k == "similarity" and v == "custom")
        }
        scored = score_samples(
            embedder=embedder
            or shared_embedder(
                stored.get("embedding_model"),
                max_tokens=stored.get("embedding_max_tokens"),  # older records: not cut
                backend=stored.get("embedding_backend") or "torch",
            ),
            prompts=record.prompts,
            answers=record.samples,
            reply=record.reply,
            reply_logprobs=record.reply_token_logprobs,
            reply_entropies=record.reply_token_entropies,
            **settings,
        )
        named = settings.get("similarity")
        scores = {**record.scores, **scored.scores}
        calibrated = (
            calibrator.calibrate(scores, confidence=scored.confidence, method=scored.method)
            if calibrator is not None and scored.confidence is not None
            else None
        )
        applies = calibrated is not None and calibrated.probability is not None
        rescored.append(
            record.model_copy(
                update={
                    "scores": scores,
                    "confidence": calibrated.probability if applies else scored.confidence,
                    "calibrated": applies,
                    "raw_confidence": scored.confidence if applies else None,
                    "method": scored.method,
                    "scoring": {
                        **stored,
                        **settings,
                        "similarity": named if isinstance(named, str) else "custom",
                    },
                }
            )
        )
    return rescored
