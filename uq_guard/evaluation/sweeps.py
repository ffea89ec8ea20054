"""Temperature sweeps: one eval run per sampling temperature, the input of TSU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.backend import Backend
from uq_guard.config import GuardConfig
from uq_guard.evaluation.eval_loop import EvalRun, run_eval
from uq_guard.evaluation.records import EvalItem

__all__ = ["run_temperatures", "temperature_folder"]


def run_temperatures(
    items: Sequence[EvalItem],
    backend: Backend,
    config: GuardConfig | None,
    temperatures: Sequence[float],
    *,
    out_dir: str | Path,
    folders: Mapping[float, str | Path] | None = None,
    **kwargs: Any,
) -> dict[float, EvalRun]:
    """One eval run per sampling temperature: the input of TSU (``report.tsu_by_method``).

    Runs ``config``'s own temperature first (when it is in the grid) and
    reuses its greedy replies at every other temperature, so the reply, which
    no temperature changes, is asked once; samples are drawn anew at each.

    Args:
        items / backend / config: as for :func:`run_eval`.
        temperatures: the grid (e.g. 0.3, 0.7, 1.0, 1.4).
        out_dir: each temperature's records go to ``out_dir/T<t>`` (e.g. ``T0.3``) ...
        folders: ... unless given here (e.g. an earlier run at one of them, resumed).
        kwargs: passed on to :func:`run_eval` (``model_name``, ``concurrency``, ...).

    Returns:
        the runs by temperature, in the order they ran.
    """
    config = config or GuardConfig()
    if len(set(temperatures)) < 2:
        raise ConfigurationError(f"a temperature grid needs two temperatures, got {temperatures}")
    runs: dict[float, EvalRun] = {}
    replies = None
    for temperature in sorted(set(temperatures), key=lambda t: (t != config.temperature, t)):
        folder = (folders or {}).get(temperature) or temperature_folder(out_dir, temperature)
        run = run_eval(
            items,
            backend,
            GuardConfig.build(config, temperature=temperature),
            out_dir=folder,
            reuse=replies,
            **kwargs,
        )
        runs[temperature] = run
        replies = replies or {r.id: r for r in run.records if r.ok}
    return runs


def temperature_folder(out_dir: str | Path, temperature: float) -> Path:
    """Where :func:`run_temperatures` keeps one temperature's run: ``out_dir/T<t>`` (``T0.3``)."""
    return Path(out_dir) / f"T{temperature:g}"
