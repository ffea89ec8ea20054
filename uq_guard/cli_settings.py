"""Any :class:`~uq_guard.GuardConfig` field, by name, from a command line: ``KEY=VALUE``.

The one parser of guard settings on a command line: ``uq-guard eval --set``,
``uq-guard serve --set`` and the benchmarks' ``--also`` read theirs here. A
value is read as JSON when it is JSON (``0.4``, ``true``, ``null``,
``["a", "b"]``), else as text (``abstain``). A name is a field's
(``n_samples``) or its section's and its own (``sampling.n_samples``, see
:data:`uq_guard.config_sections.SECTIONS`); both read into the field's name::

    settings = parse_settings(["threshold=0.4", "sampling.n_samples=3"])  # a typo fails here
    config = apply_settings(GuardConfig(n_samples=3), settings)     # a bad value fails here

Errors are :class:`~uq_guard.ConfigurationError` s that name the option, the
field and, for an unknown name, every known one; a bad value is refused by
GuardConfig itself, which names the field, its value and what is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from uq_guard._exceptions import ConfigurationError
from uq_guard.config import GuardConfig
from uq_guard.config_sections import SECTIONS, section_of

__all__ = ["apply_settings", "parse_settings"]


def parse_settings(pairs: Iterable[str], *, option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as GuardConfig settings by field name; a later pair wins.

    Args:
        pairs: e.g. ``["threshold=0.4", "gaap_protected=[\\"Paris\\"]"]``; a name may
            be given with its section, ``sampling.n_samples=3``.
        option: the option they came from, for the error messages.

    Raises:
        ConfigurationError: a pair without ``=`` or a name, a name that is no
            GuardConfig field, or a section that does not hold it.
    """
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigurationError(f"{option} takes KEY=VALUE, got {pair!r}")
        key = _field_named(key, pair, option)
        if key not in GuardConfig.model_fields:
            known = ", ".join(sorted(GuardConfig.model_fields))
            raise ConfigurationError(
                f"{option} {pair}: {key!r} is not a GuardConfig setting; known settings are: "
                f"{known}"
            )
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return settings


def _field_named(key: str, pair: str, option: str) -> str:
    """The field ``key`` names: ``n_samples`` or ``sampling.n_samples`` alike."""
    section, dot, field = key.rpartition(".")
    if not dot:
        return key
    if section not in SECTIONS:
        raise ConfigurationError(
            f"{option} {pair}: {section!r} is not a GuardConfig section; sections are: "
            f"{', '.join(SECTIONS)}"
        )
    fields = SECTIONS[section].model_fields
    if field not in fields:
        home = section_of(field)
        hint = f" ({field} is in {home})" if home else ""
        raise ConfigurationError(
            f"{option} {pair}: {field!r} is not in section {section}{hint}; its settings "
            f"are: {', '.join(fields)}"
        )
    return field


def apply_settings(
    base: GuardConfig | Mapping[str, Any] | None,
    settings: Mapping[str, Any],
    *,
    option: str = "--set",
) -> GuardConfig:
    """``base`` with ``settings`` on top, validated as one GuardConfig.

    Args:
        base: a GuardConfig (its explicit settings stay explicit, see
            :meth:`GuardConfig.build`); or defaults by name, of which the
            GuardConfig fields are kept (e.g. a local model's ``guard_defaults``);
            or None.
        settings: what :func:`parse_settings` read; each wins over ``base``.
        option: the option they came from, for the error message.

    Raises:
        ConfigurationError: GuardConfig refused a value (the field is named).
    """
    try:
        if isinstance(base, GuardConfig):
            return GuardConfig.build(base, **settings)
        defaults = {
            name: value
            for name, value in (base or {}).items()
            if name in GuardConfig.model_fields and name not in settings
        }
        return GuardConfig(**defaults, **settings)
    except ConfigurationError as exc:
        if not settings:
            raise
        raise ConfigurationError(f"{option}: {exc}") from None
