"""$UQ_GUARD_EMBEDDING_THREADS: serve --workers N splits the CPUs, and `uq-guard info` shows it."""

from __future__ import annotations

import pytest
from uq_guard_server import workers as workers_module
from uq_guard_server.workers import share_embedding_threads

from uq_guard import ConfigurationError, cli
from uq_guard._onnx_embedding import THREADS_ENV


@pytest.mark.parametrize(("cpus", "workers", "each"), [(8, 2, 4), (2, 2, 1), (2, 3, 1), (7, 3, 2)])
def test_each_worker_gets_the_cpus_over_the_workers(monkeypatch, cpus, workers, each) -> None:
    monkeypatch.setattr(workers_module, "usable_cpus", lambda: cpus)
    environ: dict[str, str] = {}

    assert share_embedding_threads(workers, environ) == each
    assert environ == {THREADS_ENV: str(each)}


def test_one_worker_keeps_the_encoders_own_default(monkeypatch) -> None:
    monkeypatch.setattr(workers_module, "usable_cpus", lambda: 4)
    environ: dict[str, str] = {}

    assert share_embedding_threads(1, environ) == 4
    assert environ == {}


def test_a_value_the_user_set_stands(monkeypatch) -> None:
    monkeypatch.setattr(workers_module, "usable_cpus", lambda: 8)
    environ = {THREADS_ENV: "3"}

    assert share_embedding_threads(2, environ) == 3
    assert environ == {THREADS_ENV: "3"}


def test_a_bad_value_stops_serve_before_any_worker_starts(monkeypatch, capsys) -> None:
    monkeypatch.setenv(THREADS_ENV, "lots")

    with pytest.raises(ConfigurationError):
        share_embedding_threads(2)
    assert cli.main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--workers", "2"]) == 2
    assert "UQ_GUARD_EMBEDDING_THREADS='lots'" in capsys.readouterr().err


def test_info_says_how_many_embedding_threads_and_what_is_wrong(monkeypatch, capsys) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cli.main(["info"]) == 0
    assert "int8 ONNX embedding threads: 3" in capsys.readouterr().out

    monkeypatch.setenv(THREADS_ENV, "many")
    assert cli.main(["info"]) == 0
    assert "UQ_GUARD_EMBEDDING_THREADS='many': give a positive whole number" in (
        capsys.readouterr().out
    )
