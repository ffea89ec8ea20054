"""The eval runner: incremental records, resume, re-scoring, the report and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard.cli import main
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder
from uq_guard.evaluation.records import EvalItem, load_questions, read_records
from uq_guard.evaluation.report import GUARD_CONFIDENCE, method_rows, write_report
from uq_guard.evaluation.runner import ReplayBackend, rescore, run_eval

QUESTIONS = [
    ("What is the capital of France?", ["Paris"]),
    ("Who wrote Hamlet?", ["Shakespeare", "William Shakespeare"]),
    ("What is the largest ocean?", ["Pacific", "Pacific Ocean"]),
    ("How many sides has a hexagon?", ["six", "6"]),
]
ANSWERS = {
    "What is the capital of France?": "Paris.",
    "Who wrote Hamlet?": "Hamlet was written by Christopher Marlowe.",
    "What is the largest ocean?": "The Pacific Ocean.",
    "How many sides has a hexagon?": "Bananas are yellow.",
}


def answer(prompt: str, index: int) -> str:
    text = ANSWERS.get(prompt)
    if text is None or index % 3 == 2:  # perturbations and some samples wander off
        return ["Paris.", "Mozart wrote operas.", "It is six."][index % 3]
    return text


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


@pytest.fixture
def items() -> list[EvalItem]:
    return [EvalItem(id=str(i), question=q, gold=g) for i, (q, g) in enumerate(QUESTIONS)]


CONFIG = GuardConfig(
    n_perturbations=2, n_samples=2, max_tokens=16, n_bootstrap=5, gaap_lexicon="none"
)


def config_with(**overrides: object) -> GuardConfig:
    return GuardConfig.build(CONFIG, **overrides)


def run(items, backend, tmp_path, embedder, **kwargs):
    return run_eval(items, backend, CONFIG, out_dir=tmp_path, embedder=embedder, **kwargs)


def test_records_are_written_one_per_question_as_they_finish(items, tmp_path, embedder) -> None:
    backend = FakeBackend(answer)
    seen_on_disk = []

    def on_record(record) -> None:  # the file already holds the record when we hear of it
        seen_on_disk.append(len(read_records(tmp_path / "records.jsonl")))

    result = run(items, backend, tmp_path, embedder, on_record=on_record)
    assert seen_on_disk == [1, 2, 3, 4]
    stored = read_records(result.records_path)
    assert [r.id for r in stored] == ["0", "1", "2", "3"]
    first = stored[0]
    assert first.correct and first.correctness_rule in ("exact_match", "containment")
    assert not stored[1].correct and stored[1].correctness_rule == "none"
    assert first.prompts[0] == QUESTIONS[0][0] and len(first.samples) == len(first.prompts)
    assert first.model_calls > 0 and first.seconds > 0
    assert "inv_entropy" in first.scores and "degree" in first.scores
    assert first.reply_token_logprobs  # the fake backend gives the reply's logprobs
    assert json.loads((tmp_path / "run.json").read_text())["n_samples"] == 2


def test_resume_skips_recorded_questions_without_a_model_call(items, tmp_path, embedder) -> None:
    first = FakeBackend(answer)
    run(items[:2], first, tmp_path, embedder)  # "interrupted" after two questions
    again = FakeBackend(answer)
    result = run(items, again, tmp_path, embedder)
    assert (result.n_resumed, result.n_new) == (2, 2)
    asked = {r.messages[-1]["content"] for r in again.requests}
    assert QUESTIONS[0][0] not in asked and QUESTIONS[1][0] not in asked
    assert [r.id for r in read_records(result.records_path)] == ["0", "1", "2", "3"]

    done = FakeBackend(answer)
    result = run(items, done, tmp_path, embedder)
    assert done.calls == 0 and result.n_new == 0 and len(result.records) == 4


def test_a_torn_last_line_is_skipped_and_its_question_redone(items, tmp_path, embedder) -> None:
    run(items[:2], FakeBackend(answer), tmp_path, embedder)
    path = tmp_path / "records.jsonl"
    with path.open("a") as handle:
        handle.write('{"id": "2", "question": "What is the lar')  # killed mid-write
    again = FakeBackend(answer)
    result = run(items[:3], again, tmp_path, embedder)
    assert result.n_new == 1 and again.calls > 0
    assert [r.id for r in read_records(path)] == ["0", "1", "2"]


def test_failed_questions_are_recorded_and_retried_on_resume(items, tmp_path, embedder) -> None:
    broken = FakeBackend(answer).fail("reply", RuntimeError("server down"), times=None)
    result = run(items[:1], broken, tmp_path, embedder)
    assert result.n_failed == 1 and "server down" in result.records[0].error
    result = run(items[:1], FakeBackend(answer), tmp_path, embedder)
    assert result.n_new == 1 and result.records[0].ok


def test_resume_with_other_settings_is_refused(items, tmp_path, embedder) -> None:
    run(items[:1], FakeBackend(answer), tmp_path, embedder)
    with pytest.raises(ConfigurationError, match="n_samples"):
        run_eval(
            items,
            FakeBackend(answer),
            config_with(n_samples=3),
            out_dir=tmp_path,
            embedder=embedder,
        )


def test_rescoring_makes_no_model_call_and_reproduces_the_scores(items, tmp_path, embedder) -> None:
    backend = FakeBackend(answer)
    records = run(items, backend, tmp_path, embedder).records
    calls = backend.calls
    again = rescore(records, embedder=embedder)
    assert backend.calls == calls
    for old, new in zip(records, again, strict=True):
        assert new.scores.keys() == old.scores.keys()
        for name, value in old.scores.items():
            assert new.scores[name] == pytest.approx(value, abs=1e-6), name
        assert new.confidence == pytest.approx(old.confidence, abs=1e-6)
    other = rescore(records, embedder=embedder, similarity="abs_cosine")
    assert other[0].scoring["similarity"] == "abs_cosine"
    assert other[0].scores["inv_entropy"] != pytest.approx(records[0].scores["inv_entropy"])


def test_reused_reply_and_x0_samples_are_not_asked_again(items, tmp_path, embedder) -> None:
    first = run(items, FakeBackend(answer), tmp_path / "gaap", embedder).records
    backend = FakeBackend(answer)
    second = run_eval(
        items,
        backend,
        config_with(perturbation="none"),
        out_dir=tmp_path / "none",
        embedder=embedder,
        reuse={r.id: r for r in first},
    ).records
    assert backend.calls == 0  # no perturbation: everything came from the first run
    for a, b in zip(first, second, strict=True):
        assert b.reply == a.reply and b.samples[0] == a.samples[0]
        assert b.reused_requests == 2 and b.scores["degree"] == pytest.approx(a.scores["degree"])


def test_replay_backend_forwards_what_it_does_not_hold(items, tmp_path, embedder) -> None:
    records = run(items[:1], FakeBackend(answer), tmp_path, embedder).records
    backend = FakeBackend(answer)
    replay = ReplayBackend(backend, {r.id: r for r in records})
    from uq_guard.backend import GenerationRequest

    msgs = ({"role": "user", "content": QUESTIONS[0][0]},)
    out = replay_run(replay, [GenerationRequest(msgs, n=5, temperature=0.7, max_tokens=16)])
    assert backend.calls == 1 and len(out[0].texts) == 5  # more samples than were stored


def test_replay_backend_leaves_later_adaptive_rounds_to_the_model(
    items, tmp_path, embedder
) -> None:
    records = run(items[:1], FakeBackend(answer), tmp_path, embedder).records
    backend = FakeBackend(answer)
    replay = ReplayBackend(backend, {r.id: r for r in records})
    from uq_guard.backend import GenerationRequest

    msgs = ({"role": "user", "content": QUESTIONS[0][0]},)
    first = GenerationRequest(msgs, n=1, temperature=0.7, max_tokens=16)
    second = GenerationRequest(msgs, n=1, temperature=0.7, max_tokens=16, seed_offset=1)
    replay_run(replay, [first])
    assert backend.calls == 0  # round 1 comes from the records
    replay_run(replay, [second])
    assert backend.calls == 1  # round 2 must be a new draw, not the stored answer again


def test_adaptive_runs_do_not_resume_into_a_plain_run(items, tmp_path, embedder) -> None:
    run(items[:1], FakeBackend(answer), tmp_path, embedder)
    with pytest.raises(ConfigurationError, match="adaptive"):
        run_eval(
            items[:1],
            FakeBackend(answer),
            config_with(adaptive=True),
            out_dir=tmp_path,
            embedder=embedder,
        )


def test_add_verbalized_asks_once_per_stored_reply_and_resumes(items, tmp_path, embedder) -> None:
    from uq_guard.evaluation.runner import add_verbalized

    run(items[:3], FakeBackend(answer), tmp_path, embedder)
    path = tmp_path / "records.jsonl"
    before = {r.id: r for r in read_records(path)}

    backend = FakeBackend(answer, verbalized="Confidence: 85%")
    records = add_verbalized(path, backend, batch_size=2)
    assert backend.calls == 3 and len(backend.rounds) == 2  # one call each, batches of two
    assert all(r.scores["verbalized_confidence"] == 0.85 for r in records)
    assert all(r.model_calls == before[r.id].model_calls + 1 for r in records)
    asked = [req.messages[1]["content"] for req in backend.requests]
    assert asked == [before[r.id].reply for r in records]  # the stored reply, not a new one

    again = FakeBackend(answer)
    assert add_verbalized(path, again) == records and again.calls == 0  # nothing left to ask
    stored = read_records(path)  # compacted: one line a question, the updated one
    assert [r.id for r in stored] == [r.id for r in records]
    assert all(r.scores["verbalized_confidence"] == 0.85 for r in stored)
    rows = {row.method: row for row in method_rows(records, n_resamples=10)}
    assert rows["verbalized_confidence"].needs == "reply + 1 call"


def test_add_verbalized_notes_an_answer_without_a_number(items, tmp_path, embedder) -> None:
    from uq_guard.evaluation.runner import add_verbalized

    run(items[:1], FakeBackend(answer), tmp_path, embedder)
    records = add_verbalized(
        tmp_path / "records.jsonl", FakeBackend(answer, verbalized="very sure")
    )
    assert "verbalized_confidence" not in records[0].scores
    assert "unreadable" in records[0].notes[-1] and "very sure" in records[0].notes[-1]
    again = FakeBackend(answer, verbalized="90")
    add_verbalized(tmp_path / "records.jsonl", again)
    assert again.calls == 0  # asked once; the note stands


def test_add_verbalized_asks_again_after_a_failed_call(items, tmp_path, embedder) -> None:
    from uq_guard.evaluation.runner import add_verbalized

    run(items[:1], FakeBackend(answer), tmp_path, embedder)
    path = tmp_path / "records.jsonl"
    down = FakeBackend(answer).fail(when="verbalized", error=RuntimeError("down"))
    assert "verbalized_confidence" not in add_verbalized(path, down)[0].scores
    again = FakeBackend(answer, verbalized="70")
    assert add_verbalized(path, again)[0].scores["verbalized_confidence"] == 0.7
    assert again.calls == 1


def replay_run(replay, requests):
    import asyncio

    return asyncio.run(replay.generate(requests))


def test_report_has_every_method_and_the_plots(items, tmp_path, embedder) -> None:
    records = run(items, FakeBackend(answer), tmp_path, embedder).records
    paths = write_report(records, tmp_path, title="t", command="uq-guard eval ...", n_resamples=50)
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    methods = {GUARD_CONFIDENCE, *records[0].scores}
    for method in methods:
        assert f"| {method} |" in md and f"<td>{method}</td>" in page
    assert "nan" not in md.lower().replace("nano", "")
    for name in ("reliability", "risk_coverage", "histograms"):
        assert paths[name].stat().st_size > 1000 and f"{name}.png" in md
    assert "uq-guard eval ..." in md and "n/a: not a probability" in md


def test_all_correct_gives_a_note_not_a_nan(items, tmp_path, embedder) -> None:
    records = run(items[:2], FakeBackend("Paris"), tmp_path, embedder).records
    records = [r.model_copy(update={"correct": True}) for r in records]
    rows = method_rows(records, n_resamples=20)
    assert rows and all("auroc" in row.summary.undefined for row in rows)
    md = write_report(records, tmp_path, plots=False)["markdown"].read_text()
    assert "undefined†" in md and "every one of the 2 answers is correct" in md
    assert "nan" not in md.lower()


def test_load_questions_reads_nq_format_and_names_bad_lines(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "q1", "answer": ["a"]}\n{"question": "q2", "answer": "b"}\n')
    items = load_questions(path)
    assert [(i.id, i.gold) for i in items] == [("0", ["a"]), ("1", ["b"])]
    assert len(load_questions(path, limit=1)) == 1
    path.write_text('{"question": "q1"}\n')
    with pytest.raises(ConfigurationError, match=r"q.jsonl:1"):
        load_questions(path)


# -- the CLI ------------------------------------------------------------------

_CLI_BACKEND: list[FakeBackend] = []


def fake_model() -> FakeBackend:
    """The CLI's ``--model py:tests.unit.test_eval_runner:fake_model`` hook."""
    backend = FakeBackend(answer)
    _CLI_BACKEND.append(backend)
    return backend


def write_questions(path: Path, n: int = 3) -> Path:
    lines = [json.dumps({"question": q, "answer": g}) for q, g in QUESTIONS[:n]]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_eval_then_calibrate(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl")
    out = tmp_path / "run"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "2", "--n-samples", "2"]
    argv += ["--max-tokens", "16", "--bootstrap", "20", "--perturbation", "gaap", "--no-progress"]
    assert main(argv) == 0
    assert len(read_records(out / "records.jsonl")) == 3
    for name in ("report.md", "report.html", "reliability.png"):
        assert (out / name).exists()
    assert "AUROC" in capsys.readouterr().out

    assert main(argv) == 0  # resumed: nothing left to ask
    assert _CLI_BACKEND[-1].calls == 0

    calib = tmp_path / "calib.json"
    argv = ["calibrate", "--records", str(out / "records.jsonl"), "--score", "inv_entropy"]
    argv += ["--method", "platt", "--alpha", "0.5", "--delta", "0.5", "--out", str(calib)]
    status = main(argv)
    assert status == 0
    saved = json.loads(calib.read_text())
    assert saved["method"] == "inv_entropy" and "risk_control" in saved
    assert saved["score"] is None  # the guard's own (label-free) confidence
    assert "coverage" in capsys.readouterr().out

    # a raw score: another method's, or the guard's own method read before §2.9's mapping
    records = str(out / "records.jsonl")
    for extra, name in (
        (["--score", "degree"], "degree"),
        (["--score", "inv_entropy", "--raw"], "inv_entropy"),
    ):
        argv = ["calibrate", "--records", records, *extra, "--alpha", "0.5", "--out", str(calib)]
        assert main(argv) == 0
        saved = json.loads(calib.read_text())
        assert saved["score"] == name and saved["method"] is None
        assert f"fitted on the raw {name!r} score" in capsys.readouterr().err


def test_cli_calibrate_names_an_unknown_score(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "run"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "0", "--n-samples", "2", "--no-progress"]
    argv += ["--bootstrap", "0", "--no-plots"]
    assert main(argv) == 0
    records = str(out / "records.jsonl")
    assert main(["calibrate", "--records", records, "--score", "nope", "--out", "c.json"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_eval_over_a_temperature_grid_writes_tsu(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "grid"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "1", "--n-samples", "2", "--no-progress"]
    argv += ["--bootstrap", "0", "--no-plots", "--temperatures", "1.4", "0.7", "0.3"]
    assert main(argv) == 0
    for folder in ("T0.3", "T0.7", "T1.4"):
        records = read_records(out / folder / "records.jsonl")
        assert len(records) == 2 and (out / folder / "report.md").exists()
        assert {r.sampling["temperature"] for r in records} == {float(folder[1:])}
    cold = read_records(out / "T0.3" / "records.jsonl")
    assert all(r.reused_requests == 1 for r in cold)  # the greedy reply is asked once, at 0.7
    table = (out / "tsu.md").read_text()
    assert "| inv_entropy |" in table and "0.3→0.7" in table and "0.7→1.4" in table
    assert "gnll (greedy reply only: constant in T)" in table
    assert json.loads((out / "tsu.json").read_text())["inv_entropy"]["n_questions"] == 2
    assert "TSU:" in capsys.readouterr().out


def yes_grader() -> FakeBackend:
    """The CLI's ``--judge py:tests.unit.test_eval_runner:yes_grader`` hook."""
    return FakeBackend(reply="Yes")


def test_cli_eval_with_a_judge_model(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 4)
    out = tmp_path / "judged"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "1", "--n-samples", "2", "--no-progress"]
    argv += [
        "--bootstrap",
        "0",
        "--no-plots",
        "--judge",
        "py:tests.unit.test_eval_runner:yes_grader",
    ]
    assert main(argv) == 0
    rules = {r.question: r.correctness_rule for r in read_records(out / "records.jsonl")}
    assert rules["What is the capital of France?"] == "exact_match"
    assert rules["Who wrote Hamlet?"] == "judge"  # "Christopher Marlowe": no rule matched
    judged = sum(rule == "judge" for rule in rules.values())
    said = f"judge py:tests.unit.test_eval_runner:yes_grader: {judged} asked"
    assert said in capsys.readouterr().out


def test_cli_eval_needs_two_temperatures_for_tsu(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 1)
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(tmp_path / "g"), "--no-progress", "--temperatures", "0.7"]
    assert main(argv) == 2
    assert "two temperatures" in capsys.readouterr().err


def test_cli_eval_with_adaptive_sampling_records_it(tmp_path) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "adaptive"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "1", "--n-samples", "3", "--no-progress"]
    argv += ["--bootstrap", "0", "--no-plots", "--adaptive", "--verbalized"]
    assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["adaptive"] is True
    records = read_records(out / "records.jsonl")
    assert all(r.sampling_stats["adaptive"] for r in records)
    assert all(r.scores["verbalized_confidence"] == 0.85 for r in records)  # FakeBackend says 85


@pytest.mark.slow
def test_cli_eval_on_the_real_local_model(tmp_path) -> None:
    pytest.importorskip("transformers")
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "run"
    argv = ["eval", "--data", str(data), "--model", "local", "--out", str(out)]
    argv += ["--n-perturbations", "2", "--n-samples", "2", "--max-tokens", "16", "--no-progress"]
    argv += ["--bootstrap", "20"]
    assert main(argv) == 0
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 and all(r.ok and r.reply_token_entropies for r in records)
    assert "mean_token_entropy" in (out / "report.md").read_text()
