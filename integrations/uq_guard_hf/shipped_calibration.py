"""The calibration shipped for the bundled SmolLM2, and the guard settings that go with it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import load_calibration
from uq_guard.config import GuardConfig

__all__ = ["DEFAULT_CALIBRATION", "shipped_guard_defaults"]

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION = (
    Path(__file__).resolve().parent / "calibrations" / "smollm2-135m-instruct.json"
)
"""The calibration fitted for the bundled SmolLM2-135M-Instruct, shipped in the wheel."""


def shipped_guard_defaults(path: str | Path | None = None) -> dict[str, Any]:
    """The guard settings that go with a shipped calibration file.

    Args:
        path: the calibration file; :data:`DEFAULT_CALIBRATION` when None.

    Returns:
        ``{"calibration": "<path>", **settings}``, ``settings`` being the
        :class:`~uq_guard.GuardConfig` settings the file was fitted under
        (its ``fitted_with``), so that a guard over the model samples as the
        calibration expects, and as ``threshold`` the file's base rate
        (:attr:`~uq_guard.calibration.Calibrator.base_rate`: abstain when the
        scores make a wrong answer more likely than before looking);
        ``{}`` when the file is absent, or unusable (logged): the model is
        then guarded uncalibrated, as any other. The file's risk-controlled
        threshold (ALGORITHMS §6), when feasible, is the stricter choice a
        user can pass as ``threshold``.
    """
    source = DEFAULT_CALIBRATION if path is None else Path(path)
    if not source.is_file():
        return {}
    try:
        calibrator = load_calibration(source)
        fitted = {
            key: value
            for key, value in (calibrator.fitted_with or {}).items()
            if key in GuardConfig.model_fields and key != "calibration"
        }
        if calibrator.base_rate is not None:
            fitted["threshold"] = calibrator.base_rate
        GuardConfig(calibration=calibrator, **fitted)  # settings a guard will accept
    except ConfigurationError as exc:
        logger.warning("shipped calibration %s not used: %s", source, exc)
        return {}
    return {"calibration": str(source), **fitted}
