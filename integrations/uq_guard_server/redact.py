"""Credentials out of anything the proxy shows or logs.

:func:`redact_url` hides a URL's user-info and secret-looking query values;
:func:`redact` scrubs free text (upstream error messages, report notes, log
lines): URLs with credentials, ``Bearer`` tokens, ``sk-`` keys and any
secret the server knows by value (its client key and the upstream's key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_SECRET_PARAM = re.compile(
    r"(?i)\b((?:api[-_]?key|access[-_]?token|token|key|secret|password|sig|signature)=)[^&\s\"']+"
)
_SECRET_NAMES = re.compile(r"(?i)key|token|secret|password|sig")


def redact_url(url: str) -> str:
    """``url`` with its user-info and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_NAMES.search(k) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with credentials replaced by ``***``.

    Args:
        text: anything about to be shown or logged.
        secrets: values to hide wherever they appear (keys known to the server);
            values shorter than 4 characters are ignored (they would mask too much).
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _SK_KEY.sub(f"sk-{MASK}", text)
    return _SECRET_PARAM.sub(rf"\1{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (and drops its args)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        return True
