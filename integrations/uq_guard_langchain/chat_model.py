"""``GuardedChatModel``: a LangChain chat model that wraps another and reports its uncertainty.

This module is the class: its settings, its LangChain interface and the
guarded call. Its parts live beside it: :mod:`uq_guard_langchain.guards`
(the Guard built once and shared with copies), :mod:`uq_guard_langchain.replies`
(the native reply carrying the report, and its stream chunks),
:mod:`uq_guard_langchain.run_tracing` (the report as a child run in traces)
and :mod:`uq_guard_langchain.backend` (the inner model as a uq_guard Backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

# Submodules, not the ``uq_guard`` root: the root's ``guard()`` imports this package.
from uq_guard._exceptions import ConfigurationError, DegradedResultError, UncertaintyAbstention
from uq_guard._sync import run_sync
from uq_guard.backend import is_backend
from uq_guard.config import GuardConfig
from uq_guard.engine import Guard
from uq_guard.report import UncertaintyReport
from uq_guard_langchain.backend import CallContext, call_context, has_temperature
from uq_guard_langchain.guards import SharedGuards
from uq_guard_langchain.replies import METADATA_KEY, annotated, chosen_message, stream_chunks
from uq_guard_langchain.run_tracing import (
    REPORT_RUN_NAME,
    atrace_report,
    child_callbacks,
    report_metadata,
    report_tags,
    trace_report,
)

__all__ = ["METADATA_KEY", "REPORT_RUN_NAME", "GuardedChatModel", "report_metadata", "report_tags"]


class GuardedChatModel(BaseChatModel):
    """Any LangChain chat model, with an uncertainty report on every reply.

    Every call answers as the inner model would, then samples extra answers
    to perturbed versions of the last user message, scores them with
    Inv-Entropy and applies the policy. The result is an ``AIMessage`` whose
    ``response_metadata["uq_guard"]`` holds the
    :class:`~uq_guard.UncertaintyReport` (as a dict) and whose
    ``usage_metadata`` counts the tokens of *all* calls.

    Example:
        >>> chat = GuardedChatModel(model=ChatOpenAI(), policy="abstain", threshold=0.5)
        >>> msg = chat.invoke("Who was the first person on Mars?")
        >>> msg.response_metadata["uq_guard"]["confidence"]

    Any :class:`~uq_guard.GuardConfig` setting may be passed as a keyword
    (``policy``, ``threshold``, ``n_perturbations``...), or a whole config as
    ``guard_config``. A model that carries ``guard_defaults`` (such as
    ``HuggingFaceChatModel.default()``, with the calibration fitted for it)
    has them applied under these: a keyword or a field set in
    ``guard_config`` wins, and ``calibration=None`` turns a shipped
    calibration off.

    Notes:
        * ``policy="raise"`` raises :class:`~uq_guard.UncertaintyAbstention`,
          which works with ``with_fallbacks(exceptions_to_handle=(UncertaintyAbstention,))``.
        * Streaming waits for the decision, then streams the chosen reply;
          the report rides on the last chunk.
        * Sampled calls bypass any LLM cache and nest under this model's run
          in callbacks (tagged ``uq_guard:sample``).
        * When the inner model is itself a uq_guard ``Backend`` (such as
          ``uq_guard_hf.HuggingFaceChatModel``), its batched ``generate`` is used.
        * Traces: after the decision, a child run named ``uq_guard`` (a chain
          run under this model's run) carries the report: its metadata holds
          the whole report under ``uq_guard`` and flat keys to filter on
          (``uq_guard_confidence``, ``uq_guard_decision``, ...), its tags
          ``uq_guard:decision:<decision>`` (and ``uq_guard:degraded``). Run
          metadata is fixed when a run starts, before the guard has decided,
          so the report rides on a run of its own (:func:`report_metadata`).
          ``invoke``, ``ainvoke`` and ``batch`` trace it; a streamed call does
          not, as langchain-core 1.x gives ``_stream`` no run manager (its
          inner calls are not nested under it either).

    Lifetime: the model builds its :class:`~uq_guard.Guard` (perturber,
    calibration, embedder, the cap on model requests) on its first call and
    reuses it for every later one, sync or async, from any thread. So
    ``max_concurrency`` caps the inner model's requests in flight across
    *all* concurrent calls of this model, and a calibration file is read
    once. What changes from call to call (messages, callbacks, ``stop``,
    call kwargs) is bound per call (:func:`uq_guard_langchain.backend.call_context`)
    and never stored on the Guard. A copy with other parts (``bind_tools``
    gives one with another inner model) builds a Guard of its own, under
    the same cap; copies share a small cache of Guards keyed by their parts
    and settings.
    """

    # Unknown keywords fail loudly: a misspelt ``treshold`` must not pass unnoticed.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: Runnable = Field(description="The chat model to guard (or a runnable made from one).")
    fallback: Runnable | None = Field(None, description="Model asked when policy='fallback' acts.")
    guard_config: GuardConfig = Field(default_factory=GuardConfig)
    embedder: Any = Field(None, exclude=True, description="Custom uq_guard Embedder.")
    perturber: Any = Field(None, exclude=True, description="Custom uq_guard Perturber.")
    stop: list[str] | None = Field(None, description="Stop sequences for every inner call.")
    streaming: bool = Field(
        False, description="Accepted for LangChain compatibility; stream() works either way."
    )
    _guards: SharedGuards = PrivateAttr(default_factory=lambda: SharedGuards(max_size=4))

    @model_validator(mode="before")
    @classmethod
    def _collect_guard_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "timeout" in data:  # LangChain's standard name for the per-call limit
            data["timeout_s"] = data.pop("timeout")
        settings = {k: data.pop(k) for k in list(data) if k in GuardConfig.model_fields}
        base = data.get("guard_config")
        if isinstance(base, dict):
            base = GuardConfig.build(**base)
        # the model's own defaults (a shipped calibration...) go under everything the user
        # set: a keyword, or a field given to guard_config; an explicit None counts as set
        explicit = set(settings) | (
            base.model_fields_set if isinstance(base, GuardConfig) else set()
        )
        defaults = {
            k: v for k, v in _guard_defaults(data.get("model")).items() if k not in explicit
        }
        if settings or defaults or not isinstance(data.get("guard_config"), GuardConfig):
            data["guard_config"] = GuardConfig.build(base, **defaults, **settings)
        return data

    @model_validator(mode="after")
    def _fallback_present(self) -> GuardedChatModel:
        if self.guard_config.policy == "fallback" and self.fallback is None:
            raise ConfigurationError("policy='fallback' needs fallback=<another chat model>")
        return self

    @property
    def _llm_type(self) -> str:
        return "uq-guard"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        inner = _chat_model(self.model)
        params = dict(getattr(inner, "_identifying_params", {}) or {})
        return {
            "inner": params,
            "inner_type": type(inner).__name__,
            **self.guard_config.model_dump(exclude={"similarity"}),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        inner = _chat_model(self.model)
        name = kwargs.get("model")
        if not isinstance(name, str):
            name = next(
                (
                    getattr(inner, a)
                    for a in ("model_name", "model", "model_id")
                    if isinstance(getattr(inner, a, None), str)
                ),
                type(inner).__name__,
            )
        params = LangSmithParams(
            ls_provider="uq_guard",
            ls_model_name=name,
            ls_model_type="chat",
            ls_temperature=self.guard_config.temperature,
            ls_max_tokens=self.guard_config.max_tokens,
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- tools ------------------------------------------------------------

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        """Bind tools to the inner model (and the fallback); calls stay guarded.

        The inner model's own ``bind_tools`` formats the tools, so any
        provider's tool format works. Returns a ``RunnableBinding`` around a
        guarded copy, as LangChain expects of ``bind_tools``.
        """
        update: dict[str, Any] = {"model": _bind_tools(self.model, tools, kwargs)}
        if self.fallback is not None:
            update["fallback"] = _bind_tools(self.fallback, tools, kwargs)
        return self.model_copy(update=update).bind()

    # -- the guarded call -------------------------------------------------

    @property
    def guard(self) -> Guard:
        """The :class:`~uq_guard.Guard` every call of this model goes through (built once)."""
        return self._guards.guard_for(
            self.model,
            self.guard_config,
            fallback=self.fallback,
            embedder=self.embedder,
            perturber=self.perturber,
        )

    async def _aguard(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        callbacks: BaseCallbackManager | None,
        kwargs: dict[str, Any],
    ) -> tuple[AIMessage, UncertaintyReport]:
        """The message the user gets and its report.

        Raises:
            UncertaintyAbstention: ``policy="raise"`` acted; ``.reply`` is the
                annotated message it withheld.
            DegradedResultError: ``strict=True`` and the estimate was degraded.
            GenerationError: the inner model's reply failed.
        """
        from langchain_core.messages import convert_to_openai_messages

        guard = self.guard
        dicts = convert_to_openai_messages(messages)
        context = CallContext(
            original=tuple(messages),
            original_dicts=tuple(dicts),
            callbacks=callbacks,
            stop=stop or self.stop,
            call_kwargs=kwargs,
        )
        try:
            backends = [b for b in (guard.backend, guard.fallback) if b is not None]
            with call_context(backends, context):
                result = await guard.arun(dicts)
        except UncertaintyAbstention as exc:
            native = (
                exc.reply
                if isinstance(exc.reply, AIMessage)
                else AIMessage(content=str(exc.reply or ""))
            )
            raise UncertaintyAbstention(
                exc.report, reply=annotated(native, exc.report, None)
            ) from None
        if not has_temperature(self.model) and not is_backend(self.model):
            # a note, not degradation: every sample came back, at the model's own setting
            result.report.notes.append(
                f"{type(_chat_model(self.model)).__name__} has no temperature setting: "
                "samples used the model's own"
            )
        return annotated(chosen_message(result), result.report, result), result.report

    def _guarded(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        """The guarded reply, its report traced as a child run (sync twin of :meth:`_aguarded`)."""
        try:
            message, report = run_sync(
                self._aguard(messages, stop, child_callbacks(run_manager), kwargs)
            )
        except (UncertaintyAbstention, DegradedResultError) as exc:
            trace_report(run_manager, exc.report)
            raise
        trace_report(run_manager, report)
        return message

    async def _aguarded(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        """The guarded reply, its report traced as a child run of this model's run."""
        try:
            message, report = await self._aguard(
                messages, stop, child_callbacks(run_manager), kwargs
            )
        except (UncertaintyAbstention, DegradedResultError) as exc:
            await atrace_report(run_manager, exc.report)
            raise
        await atrace_report(run_manager, report)
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._guarded(messages, stop, run_manager, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = await self._aguarded(messages, stop, run_manager, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._guarded(messages, stop, run_manager, kwargs)
        for chunk in stream_chunks(message):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        message = await self._aguarded(messages, stop, run_manager, kwargs)
        for chunk in stream_chunks(message):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _guard_defaults(model: Any) -> dict[str, Any]:
    """The ``GuardConfig`` settings a model carries in ``guard_defaults`` (known keys only)."""
    if not isinstance(model, Runnable):
        return {}
    defaults = getattr(_chat_model(model), "guard_defaults", None)
    if not isinstance(defaults, Mapping):
        return {}
    return {k: v for k, v in defaults.items() if k in GuardConfig.model_fields}


def _chat_model(model: Runnable) -> Runnable:
    while isinstance(model, RunnableBinding):
        model = model.bound
    return model


def _bind_tools(model: Runnable, tools: Sequence[Any], kwargs: dict[str, Any]) -> Runnable:
    inner = _chat_model(model)
    if not hasattr(inner, "bind_tools"):
        raise NotImplementedError(f"{type(inner).__name__} does not support tool calling")
    return inner.bind_tools(tools, **kwargs)
