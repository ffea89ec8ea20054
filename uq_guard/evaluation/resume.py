"""What an eval run records about its settings, and the check that makes resuming safe.

An eval folder holds ``records.jsonl`` (:data:`RECORDS_FILE`) and ``run.json``
(:data:`SETTINGS_FILE`): the model, the system message, the reply's cap and
every :class:`~uq_guard.GuardConfig` field that can change what a record
holds. The fields are read off the config itself, so a new field is guarded
by default; only :data:`_RUN_ONLY_SETTINGS` (transport, policy and such) may
differ when a run is resumed. A resume with other settings is refused rather
than mixing two configurations in one file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.config import GuardConfig

__all__ = [
    "RECORDS_FILE",
    "SETTINGS_FILE",
    "check_resume",
    "eval_config",
    "recorded_settings",
    "run_settings",
]

RECORDS_FILE = "records.jsonl"
SETTINGS_FILE = "run.json"
# settings that cannot change what a record holds: they may differ on resume; every other
# GuardConfig field is recorded in run.json and must match (a new field is guarded by default)
_RUN_ONLY_SETTINGS = frozenset(
    {
        "max_concurrency",
        "timeout_s",
        "max_retries",
        "retry_wait_s",
        "strict",
        "include_samples",
        "policy",
        "threshold",
        "abstain_message",
    }
)


def eval_config(config: GuardConfig | None = None, **overrides: Any) -> GuardConfig:
    """The guard settings of an eval run: ``config`` with samples kept and policy ``annotate``."""
    return GuardConfig.build(config, **overrides, include_samples=True, policy="annotate")


def recorded_settings(
    config: GuardConfig, model: str, *, system: str | None, reply_max_tokens: int | None
) -> dict[str, Any]:
    """What ``run.json`` records of a run: every setting but :data:`_RUN_ONLY_SETTINGS`."""
    dumped = config.model_dump()
    if isinstance(config.calibration, (str, Path)):
        # the file, not where this checkout keeps it: a clone elsewhere resumes the run
        dumped["calibration"] = Path(config.calibration).name
    settings = {
        key: (value if isinstance(value, (str, int, float, bool, type(None))) else repr(value))
        for key, value in dumped.items()
        if key not in _RUN_ONLY_SETTINGS
    }
    return {"model": model, "system": system, "reply_max_tokens": reply_max_tokens, **settings}


def run_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's ``run.json`` settings, with what an older file meant by a missing key.

    Runs made before these settings were recorded sent no system message,
    capped the reply and the samples alike, and perturbed with the published
    GAAP (any sense, no neutral frames).
    """
    return {
        "system": None,
        "reply_max_tokens": saved.get("max_tokens"),
        "gaap_edits": "paper",
        "gaap_frames": False,
        **saved,
    }


def check_resume(path: Path, settings: dict[str, Any]) -> None:
    """Refuse ``settings`` when ``path`` (a ``run.json``) records others; then write them.

    Raises:
        ConfigurationError: the folder holds records made with other settings.
    """
    if path.exists():
        before = run_settings(json.loads(path.read_text(encoding="utf-8")))
        if settings.get("reply_max_tokens") is None:  # not stated: the backend's own, unknown
            settings["reply_max_tokens"] = before["reply_max_tokens"]
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k, v) != v}
        if changed:
            what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigurationError(
                f"{path.parent} holds records made with other settings ({what}); use another "
                "output folder, or rescore() the records for other scoring settings"
            )
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
