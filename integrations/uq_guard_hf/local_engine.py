"""Which engine the default local model runs on: the rule, and the engines' classes.

:meth:`uq_guard_hf.HuggingFaceChatModel.default` follows :func:`pick_local_engine`;
the class it builds for an engine other than transformers is found in
:data:`ENGINE_MODELS`, where that engine's module puts it when imported (the
package imports it), so that ``chat_model`` need not import its own subclass.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Literal

from uq_guard._exceptions import ConfigurationError, MissingDependencyError

__all__ = [
    "ENGINE_ENV",
    "ENGINE_MODELS",
    "LOCAL_ENGINES",
    "llama_cpp_available",
    "pick_local_engine",
    "requested_engine",
]

logger = logging.getLogger(__name__)

#: engine name -> the chat model class ``default()`` builds for it (filled on import)
ENGINE_MODELS: dict[str, Any] = {}

LOCAL_ENGINES: tuple[str, ...] = ("auto", "transformers", "llama_cpp")
_LLAMA_CPP_DTYPES = (None, "float16", "float32")
ENGINE_ENV = "UQ_GUARD_LOCAL_ENGINE"
"""Environment variable that chooses the engine when the code leaves it at ``"auto"``."""


def llama_cpp_available() -> bool:
    """Whether ``llama-cpp-python`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def pick_local_engine(
    engine: str, *, device: str, dtype: str | None, llama_cpp_installed: bool
) -> Literal["transformers", "llama_cpp"]:
    """The engine the default local model runs on.

    ``"auto"`` is llama.cpp on CPU (dtype unset, float16 or float32) when it
    is installed, and transformers otherwise: on CUDA (batched ``generate``
    there is fast and llama.cpp is built for CPU here), on MPS, for bfloat16,
    or without the package (logged at INFO).

    Raises:
        ConfigurationError: an unknown engine, or ``"llama_cpp"`` on a device
            other than the CPU.
        MissingDependencyError: ``"llama_cpp"`` asked for explicitly and not installed.
    """
    if engine not in LOCAL_ENGINES:
        raise ConfigurationError(
            f"engine must be one of {', '.join(LOCAL_ENGINES)}, got {engine!r}"
        )
    on_cpu = device == "cpu" and dtype in _LLAMA_CPP_DTYPES
    if engine == "llama_cpp":
        if not on_cpu:
            raise ConfigurationError(
                f"engine='llama_cpp' runs on the CPU in float16 or float32; got "
                f"device={device!r}, dtype={dtype!r}"
            )
        if not llama_cpp_installed:
            raise MissingDependencyError("the llama.cpp engine", "llama")
        return "llama_cpp"
    if engine == "transformers" or not on_cpu:
        return "transformers"
    if not llama_cpp_installed:
        logger.info(
            "llama-cpp-python is not installed: the local model runs on transformers "
            "(about half as fast on CPU; pip install 'uq-guard[llama]' to speed it up)"
        )
        return "transformers"
    return "llama_cpp"


def requested_engine(engine: str | None) -> str:
    """``engine``, else ``$UQ_GUARD_LOCAL_ENGINE``, else ``"auto"``."""
    return engine or os.environ.get(ENGINE_ENV) or "auto"
