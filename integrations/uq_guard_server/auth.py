"""The client key: ``Authorization: Bearer <key>`` when the server has one."""

from __future__ import annotations

import hmac

from fastapi import Request

from uq_guard_server.errors import APIError


def key_ok(request: Request, api_key: str | None) -> bool:
    """Whether ``request`` carries ``api_key`` (always, when the server has none)."""
    if api_key is None:
        return True
    # RFC 6750: the scheme is case-insensitive; a raw key without it is refused.
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def authorise(request: Request, api_key: str | None) -> None:
    """Refuse ``request`` with 401 unless it carries ``api_key``."""
    if not key_ok(request, api_key):
        raise APIError(401, "invalid API key", code="invalid_api_key")
