"""How a guarded call shows in LangChain traces (LangSmith, Langfuse, any callback handler).

The inner model's calls nest under the ``GuardedChatModel``'s run
(:func:`child_callbacks`). After the decision, a child run named
``uq_guard`` (a chain run under the model's run) carries the report: its
metadata holds the whole report under ``uq_guard`` and flat keys to filter
on (:func:`report_metadata`), its tags the decision (:func:`report_tags`).
Run metadata is fixed when a run starts, before the guard has decided, so
the report rides on a run of its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)

from uq_guard.report import UncertaintyReport
from uq_guard_langchain.replies import METADATA_KEY

__all__ = [
    "REPORT_RUN_NAME",
    "atrace_report",
    "child_callbacks",
    "report_metadata",
    "report_tags",
    "trace_report",
]

REPORT_RUN_NAME = "uq_guard"
"""The name of the child run that carries the report in its metadata and tags."""

_Manager = TypeVar("_Manager", CallbackManager, AsyncCallbackManager)


def report_metadata(report: UncertaintyReport) -> dict[str, Any]:
    """The run metadata that carries ``report`` in traces.

    The whole report (as in ``response_metadata``) under ``uq_guard``, and
    flat scalar keys that trace UIs (LangSmith, Langfuse) can filter on.
    """
    return {
        METADATA_KEY: report.model_dump(),
        "uq_guard_confidence": report.confidence,
        "uq_guard_decision": report.decision,
        "uq_guard_method": report.method,
        "uq_guard_policy": report.policy,
        "uq_guard_threshold": report.threshold,
        "uq_guard_calibrated": report.calibrated,
        "uq_guard_degraded": report.degraded,
    }


def report_tags(report: UncertaintyReport) -> list[str]:
    """The tags of the report's run: the decision, and ``uq_guard:degraded`` when it was."""
    tags = [f"uq_guard:decision:{report.decision}"]
    if report.degraded:
        tags.append("uq_guard:degraded")
    return tags


def trace_report(run_manager: CallbackManagerForLLMRun | None, report: UncertaintyReport) -> None:
    """Record ``report`` as the ``uq_guard`` child run (see :func:`report_metadata`)."""
    if run_manager is None:
        return
    manager = _report_manager(run_manager, report, CallbackManager)
    run = manager.on_chain_start(None, _report_inputs(report), name=REPORT_RUN_NAME)
    run.on_chain_end({METADATA_KEY: report.model_dump()})


async def atrace_report(
    run_manager: AsyncCallbackManagerForLLMRun | None, report: UncertaintyReport
) -> None:
    """Async twin of :func:`trace_report`."""
    if run_manager is None:
        return
    manager = _report_manager(run_manager, report, AsyncCallbackManager)
    run = await manager.on_chain_start(None, _report_inputs(report), name=REPORT_RUN_NAME)
    await run.on_chain_end({METADATA_KEY: report.model_dump()})


def child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> BaseCallbackManager | None:
    """Callbacks for the inner calls, nested under this model's run."""
    if run_manager is None:
        return None
    return _child_manager(run_manager, CallbackManager)


def _child_manager(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    manager_class: type[_Manager],
) -> _Manager:
    """A callback manager for a child of ``run_manager``'s run, inheriting what it passes down.

    An LLM run manager has no ``get_child`` (LLM runs are leaves in
    LangChain's model), so this builds what ``ParentRunManager.get_child`` would.
    """
    manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _report_manager(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    report: UncertaintyReport,
    manager_class: type[_Manager],
) -> _Manager:
    """A callback manager for the report's run: a child of this model's run, with its metadata."""
    manager = _child_manager(run_manager, manager_class)
    manager.add_tags(report_tags(report), inherit=False)
    manager.add_metadata(report_metadata(report), inherit=False)
    return manager


def _report_inputs(report: UncertaintyReport) -> dict[str, Any]:
    return {"policy": report.policy, "threshold": report.threshold}
