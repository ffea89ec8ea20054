"""uq_guard_server: an OpenAI-compatible proxy that puts uq_guard in front of any chat model.

``uq-guard serve --upstream https://api.example.com/v1`` (or ``--upstream local``)
starts it; any OpenAI client in any language then talks to it as to OpenAI,
and every chat completion carries an ``uncertainty`` report.

Needs the ``server`` extra: ``pip install 'uq-guard[server]'``.
"""

from uq_guard_server.app import DECISION_HEADER, ServerSettings, create_app
from uq_guard_server.policy import DEFAULT_ALLOWED_SETTINGS, ServerPolicy
from uq_guard_server.upstream import LocalUpstream, OpenAIUpstream, Upstream

__all__ = [
    "DECISION_HEADER",
    "DEFAULT_ALLOWED_SETTINGS",
    "LocalUpstream",
    "OpenAIUpstream",
    "ServerPolicy",
    "ServerSettings",
    "Upstream",
    "create_app",
]
