"""``uq_guard.guard(obj, **config)``: the one-line entry point.

It recognises what it is given by the modules of its class hierarchy, so the
engine never imports a framework: the matching adapter is imported lazily,
with a clear "pip install" message when its extra is missing.
"""

from __future__ import annotations

from typing import Any

from uq_guard._exceptions import MissingDependencyError, UnsupportedModelError


def _defined_in(obj: Any, *prefixes: str) -> bool:
    return any((cls.__module__ or "").split(".")[0] in prefixes for cls in type(obj).__mro__)


def guard(obj: Any, **config: Any) -> Any:
    """Wrap a model so every reply carries an uncertainty report.

    Args:
        obj: a LangChain chat model (or a runnable from ``bind_tools``), a
            ``uq_guard_hf.HuggingFaceChatModel``, or an ``openai.OpenAI`` /
            ``openai.AsyncOpenAI`` client.
        **config: any :class:`~uq_guard.GuardConfig` setting, plus
            ``fallback=<model>`` for ``policy="fallback"``. A model that
            carries ``guard_defaults`` (``HuggingFaceChatModel.default()``
            carries the calibration fitted for it) starts from those; each
            setting given here wins, and ``calibration=None`` turns a
            shipped calibration off.

    Returns:
        An object with the same interface as ``obj`` (for LangChain, a
        ``GuardedChatModel``; for an OpenAI client, a client of the same type:
        see ``uq_guard_openai.wrap_openai``).

    Raises:
        UnsupportedModelError: ``obj`` is of a kind uq_guard cannot wrap.
        MissingDependencyError: the adapter's extra is not installed.
        ConfigurationError: a bad setting.
    """
    if _defined_in(obj, "langchain_core", "langchain", "langchain_community") or _defined_in(
        obj, "uq_guard_hf"
    ):
        try:
            from uq_guard_langchain import GuardedChatModel
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MissingDependencyError("guarding a LangChain model", "langchain") from exc
        return GuardedChatModel(model=obj, **config)
    if _defined_in(obj, "openai"):
        try:
            from uq_guard_openai import wrap_openai
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MissingDependencyError("guarding an OpenAI client", "openai") from exc
        return wrap_openai(obj, **config)
    raise UnsupportedModelError(
        f"uq_guard.guard() cannot wrap a {type(obj).__module__}.{type(obj).__qualname__}. "
        "Supported: LangChain chat models (pip install 'uq-guard[langchain]'), "
        "uq_guard_hf.HuggingFaceChatModel (pip install 'uq-guard[local]') and "
        "openai.OpenAI / AsyncOpenAI clients (pip install 'uq-guard[openai]'). "
        "For anything else, implement uq_guard.Backend and use uq_guard.Guard."
    )
