"""Guard parts that need no model: an embedder from word hashes and fixed rewordings."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from uq_guard.perturb import PerturbationResult


class HashingEmbedder:
    """Bag-of-words vectors from word hashes: equal texts embed equally, unrelated ones apart."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64))
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, hashlib.md5(word.encode()).digest()[0] % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class FixedVariants:
    """Rewordings made without any model call."""

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        variants = [f"Variant {i}: {prompt}" for i in range(1, m + 1)]
        return PerturbationResult(prompts=variants, method="fixed", n_requested=m)
