"""What a client may ask of the proxy: the request checks and the per-request caps.

Every request field is treated as hostile (ARCHITECTURE promise 5). The
operator decides, and a request outside the policy gets a 400 that names the
field or the cap *before any upstream call*:

* per-request ``uq_guard`` settings must be in the allow-list
  (:data:`DEFAULT_ALLOWED_SETTINGS` unless ``--allow-setting`` says
  otherwise) and have the setting's JSON type (``"enabled": "false"`` is a
  400, not a truthy on); :data:`OPERATOR_ONLY_SETTINGS` can never be allowed;
* body fields that steer the SDK (:data:`SDK_FIELDS`) are refused;
* a request whose settings would need more upstream calls or completion
  tokens than the caps allow is refused (not clamped: a silently smaller
  guard would report a certainty the client did not ask for); the
  per-request concurrency is clamped, as it changes speed, not results;
* the call cap also holds at run time: retries included, the upstream
  sees at most ``max_upstream_calls`` chat calls for one request.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError

ENABLED = "enabled"
"""The per-request switch (``{"enabled": false}`` skips the guard); not a GuardConfig field."""

DEFAULT_ALLOWED_SETTINGS: tuple[str, ...] = (
    ENABLED,
    "policy",
    "threshold",
    "n_perturbations",
    "n_samples",
    "temperature",
    "max_tokens",
    "abstain_message",
    "include_samples",
)
"""Per-request settings a client may send unless the operator says otherwise."""

OPERATOR_ONLY_SETTINGS: frozenset[str] = frozenset(
    {
        "device",
        "embedding_model",
        "embedding_max_tokens",
        "embedding_backend",
        "calibration",
        "similarity",
        "gaap_substitutions",
        "timeout_s",
        "max_retries",
        "retry_wait_s",
    }
)
"""Settings that choose server resources, files or transport: never taken from a client."""

SDK_FIELDS: tuple[str, ...] = ("extra_headers", "extra_query", "extra_body", "timeout")
"""Body fields that would steer the openai SDK's call to the upstream: always refused."""


class PolicyError(ValueError):
    """A request outside the server's policy (answered with a 400).

    Attributes:
        param: the offending field, e.g. ``uq_guard.device`` or ``max_tokens``.
        code: ``setting_not_allowed``, ``operator_only``, ``over_server_cap`` ...
    """

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message)
        self.param, self.code = param, code


@dataclass(frozen=True)
class ServerPolicy:
    """The operator's limits on what one request may do.

    Attributes:
        allowed_settings: the ``uq_guard`` settings a client may send.
        max_upstream_calls: chat calls to the upstream one request may cause,
            retries included (checked before the call from the settings, and
            enforced while it runs).
        max_request_tokens: completion tokens one request may ask for, the
            reply's ``max_tokens`` plus every sample's, summed.
        max_request_concurrency: upstream calls in flight at once for one
            request (its ``max_concurrency`` is clamped to it); a worker has
            at most this times its requests at work in flight. The default,
            64, is the library's ``max_concurrency`` and ``max_upstream_calls``:
            a default request (52 calls at most) goes in one round
            (``benchmarks/results/performance/proxy_load.md``).
        max_perturb_chars: a prompt longer than this (the messages' text,
            summed) is not perturbed: GAAP's time grows with the prompt, and
            the request is answered from samples of the prompt itself, with a note.
    """

    allowed_settings: frozenset[str] = frozenset(DEFAULT_ALLOWED_SETTINGS)
    max_upstream_calls: int = 64
    max_request_tokens: int = 32_768
    max_request_concurrency: int = 64
    max_perturb_chars: int = 2_000

    def __post_init__(self) -> None:
        forbidden = sorted(self.allowed_settings & OPERATOR_ONLY_SETTINGS)
        if forbidden:
            raise ConfigurationError(
                f"operator-only settings cannot be allowed per request: {', '.join(forbidden)}"
            )
        unknown = sorted(self.allowed_settings - set(GuardConfig.model_fields) - {ENABLED})
        if unknown:
            raise ConfigurationError(f"unknown settings in the allow-list: {', '.join(unknown)}")
        for name in (
            "max_upstream_calls",
            "max_request_tokens",
            "max_request_concurrency",
            "max_perturb_chars",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def allowing(cls, names: Iterable[str] | None, **caps: int) -> ServerPolicy:
        """A policy allowing ``names`` (``None``: the default list)."""
        allowed = DEFAULT_ALLOWED_SETTINGS if names is None else tuple(names)
        return cls(allowed_settings=frozenset(allowed), **caps)

    # -- one request -------------------------------------------------------------

    def request_config(
        self,
        base: GuardConfig,
        settings: dict[str, Any],
        reply_max_tokens: int | None,
        prompt_chars: int = 0,
    ) -> tuple[GuardConfig | None, list[str]]:
        """The config of one request (``None`` when the client turned the guard off) and notes.

        A note says what the server changed, e.g. perturbation skipped for a long prompt.

        Raises:
            PolicyError: a setting outside the allow-list, of the wrong type,
                or a request over a cap.
        """
        for name, value in settings.items():
            if name in OPERATOR_ONLY_SETTINGS:
                raise PolicyError(
                    f"'{name}' is set by the server's operator, not per request",
                    param=f"uq_guard.{name}",
                    code="operator_only",
                )
            if name not in self.allowed_settings:
                allowed = ", ".join(sorted(self.allowed_settings)) or "none"
                raise PolicyError(
                    f"the setting '{name}' may not be set per request here; allowed: {allowed}",
                    param=f"uq_guard.{name}",
                    code="setting_not_allowed",
                )
            _check_json_type(name, value)
        overrides = dict(settings)
        if not overrides.pop(ENABLED, True):
            return None, []
        if "max_concurrency" in overrides and overrides["max_concurrency"] > (
            self.max_request_concurrency
        ):
            raise PolicyError(
                f"uq_guard.max_concurrency={overrides['max_concurrency']} is over the server's "
                f"cap max_request_concurrency={self.max_request_concurrency}",
                param="uq_guard.max_concurrency",
                code="over_server_cap",
            )
        config = build_config(base, overrides)
        if config.max_concurrency > self.max_request_concurrency:
            config = GuardConfig.build(config, max_concurrency=self.max_request_concurrency)
        notes = []
        perturbs = config.perturbation != "none" and config.n_perturbations > 0
        if perturbs and prompt_chars > self.max_perturb_chars:
            config = GuardConfig.build(config, n_perturbations=0, perturbation="none")
            notes.append(
                f"perturbation skipped: the prompt is over {self.max_perturb_chars} characters"
            )
        self.check_cost(config, reply_max_tokens)
        return config, notes

    def check_cost(self, config: GuardConfig, reply_max_tokens: int | None) -> None:
        """Refuse a config whose worst case is over the call or token cap.

        Raises:
            PolicyError: naming the cap.
        """
        calls = upstream_calls(config)
        if calls > self.max_upstream_calls:
            raise PolicyError(
                f"these settings need up to {calls} upstream calls per request; the server "
                f"allows max_upstream_calls={self.max_upstream_calls}",
                param="uq_guard",
                code="over_server_cap",
            )
        tokens = completion_tokens(config, reply_max_tokens)
        if tokens > self.max_request_tokens:
            raise PolicyError(
                f"this request may ask for up to {tokens} completion tokens; the server "
                f"allows max_request_tokens={self.max_request_tokens}",
                param="uq_guard" if reply_max_tokens is None else "max_tokens",
                code="over_server_cap",
            )


def upstream_calls(config: GuardConfig) -> int:
    """The most chat calls one guarded request makes, before retries.

    Worst case: an upstream that ignores ``n`` gets one call per sample.
    """
    m = config.n_perturbations if config.perturbation != "none" else 0
    assessment = 1 + (m + 1) * config.n_samples + int(config.verbalized_confidence)
    extras = 0
    if m and "paraphrase" in config.perturbation:
        extras += 1
    if m and "gaap" in config.perturbation and config.gaap_lexicon in ("model", "auto"):
        extras += 1  # the substitutes request of the model lexicon
    fallback = assessment if config.policy == "fallback" else 0
    return assessment + extras + fallback


def completion_tokens(config: GuardConfig, reply_max_tokens: int | None) -> int:
    """The most completion tokens one guarded request asks for (the reply's when given).

    Samples are capped at ``config.max_tokens``; under ``best_of`` the
    original prompt's samples go at the reply's length (they may become the answer).
    """
    m = config.n_perturbations if config.perturbation != "none" else 0
    reply = reply_max_tokens or 0
    x0_cap = (reply_max_tokens or config.max_tokens) if config.policy == "best_of" else None
    samples = (m + 1) * config.n_samples * config.max_tokens
    if x0_cap is not None:
        samples += config.n_samples * (x0_cap - config.max_tokens)
    paraphrase = min(1024, 48 * m + 64) if m and "paraphrase" in config.perturbation else 0
    fallback = samples + reply if config.policy == "fallback" else 0
    return samples + reply + paraphrase + fallback


def build_config(base: GuardConfig, overrides: dict[str, Any]) -> GuardConfig:
    """``base`` with a client's overrides, a bad value named without echoing the server's config.

    Raises:
        PolicyError: the overrides make an invalid config.
    """
    try:
        return GuardConfig.build(base, **overrides)
    except ConfigurationError as exc:
        raise PolicyError(
            _describe_for_client(exc, overrides), param="uq_guard", code="invalid_setting"
        ) from None


def _describe_for_client(exc: ConfigurationError, overrides: dict[str, Any]) -> str:
    # GuardConfig's own message quotes the whole input of a cross-field error,
    # that is, the server's config: rebuild it from the structured errors.
    context = exc.__cause__ or exc.__context__
    if not isinstance(context, ValidationError):
        return "invalid uq_guard settings"
    parts = []
    for err in context.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc and loc.split(".")[0] in overrides:
            parts.append(f"{loc}={_short(err.get('input'))}: {msg}")
        elif loc:
            parts.append(f"{loc}: {msg}")
        else:
            parts.append(msg)
    return "invalid uq_guard settings: " + "; ".join(parts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_json_type(name: str, value: Any) -> None:
    """Refuse a setting whose JSON type is not the setting's (no "3" for 3, no "false")."""
    expected = bool if name == ENABLED else GuardConfig.model_fields[name].annotation
    if not _matches(expected, value):
        raise PolicyError(
            f"uq_guard.{name} must be {_type_name(expected)}, got {_short(value)}",
            param=f"uq_guard.{name}",
            code="invalid_type",
        )


def _matches(expected: Any, value: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if expected is str or origin is Literal:
        return isinstance(value, str)
    return True  # anything richer is GuardConfig's to validate


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(expected))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(expected, "null" if expected is type(None) else str(expected))
