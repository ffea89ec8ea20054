"""``GuardedChatModel``: a LangChain chat model that wraps another and reports its uncertainty."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ConfigDict, Field, model_validator

from uq_guard import Guard, GuardConfig, UncertaintyAbstention
from uq_guard._sync import run_sync
from uq_guard.backend import Backend, is_backend
from uq_guard.engine import GuardResult
from uq_guard.report import UncertaintyReport
from uq_guard_langchain.backend import LangChainBackend, has_temperature

METADATA_KEY = "uq_guard"


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
            from uq_guard import ConfigurationError

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

    def _backend(
        self,
        model: Runnable,
        messages: list[BaseMessage],
        stop: list[str] | None,
        callbacks: BaseCallbackManager | None,
        kwargs: dict[str, Any],
    ) -> Backend:
        if is_backend(model):
            return model
        from langchain_core.messages import convert_to_openai_messages

        cfg = self.guard_config
        return LangChainBackend(
            model,
            max_concurrency=cfg.max_concurrency,
            timeout_s=cfg.timeout_s,
            original=messages,
            original_dicts=convert_to_openai_messages(messages),
            callbacks=callbacks,
            stop=stop,
            call_kwargs=kwargs,
        )

    async def _aguard(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        callbacks: BaseCallbackManager | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        from langchain_core.messages import convert_to_openai_messages

        stop = stop or self.stop
        backend = self._backend(self.model, messages, stop, callbacks, kwargs)
        fallback = (
            None
            if self.fallback is None
            else self._backend(self.fallback, messages, stop, callbacks, kwargs)
        )
        guard = Guard(
            backend,
            self.guard_config,
            embedder=self.embedder,
            perturber=self.perturber,
            fallback=fallback,
        )
        try:
            result = await guard.arun(convert_to_openai_messages(messages))
        except UncertaintyAbstention as exc:
            native = (
                exc.reply
                if isinstance(exc.reply, AIMessage)
                else AIMessage(content=str(exc.reply or ""))
            )
            raise UncertaintyAbstention(
                exc.report, reply=_annotated(native, exc.report, None)
            ) from None
        if not has_temperature(self.model) and not is_backend(self.model):
            # a note, not degradation: every sample came back, at the model's own setting
            result.report.notes.append(
                f"{type(_chat_model(self.model)).__name__} has no temperature setting: "
                "samples used the model's own"
            )
        return _annotated(_chosen_message(result), result.report, result)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        callbacks = _child_callbacks(run_manager)
        message = run_sync(self._aguard(messages, stop, callbacks, kwargs))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        callbacks = _child_callbacks(run_manager)
        message = await self._aguard(messages, stop, callbacks, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        callbacks = _child_callbacks(run_manager)
        message = run_sync(self._aguard(messages, stop, callbacks, kwargs))
        for chunk in _chunks(message):
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
        callbacks = _child_callbacks(run_manager)
        message = await self._aguard(messages, stop, callbacks, kwargs)
        for chunk in _chunks(message):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> BaseCallbackManager | None:
    """Callbacks for the inner calls, nested under this model's run.

    An LLM run manager has no ``get_child`` (LLM runs are leaves in
    LangChain's model), so this builds what ``ParentRunManager.get_child`` would.
    """
    if run_manager is None:
        return None
    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


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


def _chosen_message(result: GuardResult) -> AIMessage:
    """The native message for what the policy chose."""
    decision = result.report.decision
    source = (
        result.reply
        if decision == "answer"
        else (result.fallback_reply if decision == "fallback" else None)
    )
    if source is not None and source.raw and isinstance(source.raw[0], AIMessage):
        return source.raw[0]
    return AIMessage(content=result.text)


def _annotated(
    message: AIMessage, report: UncertaintyReport, result: GuardResult | None
) -> AIMessage:
    """A copy of ``message`` carrying the report and the summed usage of all calls."""
    update: dict[str, Any] = {
        "response_metadata": {**message.response_metadata, METADATA_KEY: report.model_dump()},
    }
    if result is not None and result.usage.model_calls:
        update["usage_metadata"] = {
            "input_tokens": result.usage.prompt_tokens,
            "output_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        }
    return message.model_copy(update=update)


_PIECES = re.compile(r"\s*\S+\s*|\s+")


def _chunks(message: AIMessage) -> list[ChatGenerationChunk]:
    """The message as stream chunks: text piece by piece, tool calls and report on the last."""
    text = message.content if isinstance(message.content, str) else message.text
    pieces = _PIECES.findall(text) if text else []
    chunks = [
        ChatGenerationChunk(message=AIMessageChunk(content=piece, id=message.id))
        for piece in pieces
    ]
    final = AIMessageChunk(
        content="" if pieces else (message.content if not isinstance(message.content, str) else ""),
        id=message.id,
        chunk_position="last",
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
        tool_call_chunks=[
            tool_call_chunk(name=c["name"], args=_json(c["args"]), id=c.get("id"), index=i)
            for i, c in enumerate(message.tool_calls)
        ],
    )
    chunks.append(ChatGenerationChunk(message=final))
    return chunks


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
