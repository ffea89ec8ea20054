"""Where uq_guard keeps what it provisions (models, the WordNet corpus).

The root is ``$UQ_GUARD_HOME`` when set, else ``~/.cache/uq_guard``. The
engine and every integration take it from here, so one setting moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Return the uq_guard cache folder: ``$UQ_GUARD_HOME``, else ``~/.cache/uq_guard``."""
    configured = os.environ.get("UQ_GUARD_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "uq_guard"


def nltk_data_dir() -> Path:
    """The nltk data folder uq_guard provisions into: ``<cache_root>/nltk_data``."""
    return cache_root() / "nltk_data"
