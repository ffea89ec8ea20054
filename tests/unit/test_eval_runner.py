"""The eval runner: incremental records, resume, re-scoring, the report and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import GuardConfig
from uq_guard._exceptions import ConfigurationError
from uq_guard.calibration import Calibrator, PlattMapping
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


def test_a_rescore_recalibrates_or_drops_the_stale_calibration(items, tmp_path, embedder) -> None:
    records = run(items, FakeBackend(answer), tmp_path, embedder).records
    stale = [r.model_copy(update={"calibrated": True, "raw_confidence": 0.3}) for r in records]

    plain = rescore(stale, embedder=embedder)
    assert not any(r.calibrated for r in plain)
    assert all(r.raw_confidence is None for r in plain)

    calibrator = Calibrator(mapping=PlattMapping(slope=2.0, intercept=-1.0), method="inv_entropy")
    mapped = rescore(stale, embedder=embedder, calibrator=calibrator)
    for before, after in zip(plain, mapped, strict=True):
        assert after.calibrated and after.raw_confidence == pytest.approx(before.confidence)
        assert after.confidence == pytest.approx(calibrator.apply(before.confidence))


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


SYSTEM = "Answer in a few words."


def test_a_system_message_travels_with_every_request_and_is_recorded(
    items, tmp_path, embedder
) -> None:
    backend = FakeBackend(answer)
    records = run(items[:2], backend, tmp_path, embedder, system=SYSTEM).records
    system = {"role": "system", "content": SYSTEM}
    assert backend.requests and all(r.messages[0] == system for r in backend.requests)
    assert all(len(r.messages) == 2 for r in backend.requests)
    samples = backend.requests_of("sample")
    assert {r.messages[-1]["content"] for r in samples} >= {q for q, _ in QUESTIONS[:2]}
    assert len({r.messages[-1]["content"] for r in samples}) > 2  # perturbations carry it too
    assert all(r.system == SYSTEM for r in records)
    assert all(r.system == SYSTEM for r in read_records(tmp_path / "records.jsonl"))
    assert json.loads((tmp_path / "run.json").read_text())["system"] == SYSTEM

    for other in ("Answer in one sentence.", None):  # a resume must send the same message
        with pytest.raises(ConfigurationError, match="system"):
            run(items, FakeBackend(answer), tmp_path, embedder, system=other)
    with pytest.raises(ConfigurationError, match="system"):
        run(items, FakeBackend(answer), tmp_path / "empty", embedder, system="  ")

    from uq_guard.evaluation.runner import add_verbalized

    asked = FakeBackend(answer, verbalized="70")
    add_verbalized(tmp_path / "records.jsonl", asked)
    assert asked.calls == 2 and all(r.messages[0] == system for r in asked.requests)


def test_an_old_run_without_a_system_message_refuses_one(items, tmp_path, embedder) -> None:
    run(items[:1], FakeBackend(answer), tmp_path, embedder)
    settings = json.loads((tmp_path / "run.json").read_text())
    del settings["system"], settings["reply_max_tokens"]  # as written before these existed
    (tmp_path / "run.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigurationError, match="system"):
        run(items, FakeBackend(answer), tmp_path, embedder, system=SYSTEM)
    # back then one cap served the reply and the samples
    with pytest.raises(ConfigurationError, match="reply_max_tokens: 16 -> 256"):
        run(items, FakeBackend(answer), tmp_path, embedder, reply_max_tokens=256)
    assert run(items[:2], FakeBackend(answer), tmp_path, embedder, reply_max_tokens=16).n_new == 1


def test_the_reply_has_its_own_longer_cap(items, tmp_path, embedder) -> None:
    backend = FakeBackend(answer)
    records = run(items[:2], backend, tmp_path, embedder, reply_max_tokens=256).records
    assert {r.max_tokens for r in backend.requests_of("reply")} == {256}
    assert {r.max_tokens for r in backend.requests_of("sample")} == {CONFIG.max_tokens}
    settings = json.loads((tmp_path / "run.json").read_text())
    assert (settings["reply_max_tokens"], settings["max_tokens"]) == (256, CONFIG.max_tokens)
    assert all(r.sampling["reply_max_tokens"] == 256 for r in records)
    with pytest.raises(ConfigurationError, match="reply_max_tokens: 256 -> 64"):
        run(items, FakeBackend(answer), tmp_path, embedder, reply_max_tokens=64)
    with pytest.raises(ConfigurationError, match="reply_max_tokens must be >= 1"):
        run(items, FakeBackend(answer), tmp_path / "zero", embedder, reply_max_tokens=0)


def test_replies_are_reused_only_with_the_same_system_message_and_cap(
    items, tmp_path, embedder
) -> None:
    first = run(items[:1], FakeBackend(answer), tmp_path / "a", embedder, system=SYSTEM).records
    reuse = {r.id: r for r in first}
    none = config_with(perturbation="none")
    same = FakeBackend(answer)
    run_eval(
        items[:1], same, none, out_dir=tmp_path / "b", embedder=embedder, reuse=reuse, system=SYSTEM
    )
    assert same.calls == 0
    other = FakeBackend(answer)
    run_eval(items[:1], other, none, out_dir=tmp_path / "c", embedder=embedder, reuse=reuse)
    assert len(other.requests_of("reply")) == 1  # asked without the system message: not reused
    longer = FakeBackend(answer)
    run_eval(
        items[:1],
        longer,
        none,
        out_dir=tmp_path / "d",
        embedder=embedder,
        reuse=reuse,
        system=SYSTEM,
        reply_max_tokens=256,
    )
    assert len(longer.requests_of("reply")) == 1  # a reply cut at another length: not reused


def test_report_warns_when_too_few_answers_are_right(tmp_path) -> None:
    from uq_guard.evaluation.records import EvalRecord

    def records(n_right: int, n: int) -> list[EvalRecord]:
        return [
            EvalRecord(
                id=str(i),
                question="q",
                gold=["a"],
                reply="a",
                correct=i < n_right,
                confidence=(i * 37 % n) / n,
                method="inv_entropy",
                scores={"inv_entropy": 1 - (i * 37 % n) / n},
            )
            for i in range(n)
        ]

    paths = write_report(records(3, 74), tmp_path / "few", n_resamples=20, plots=False)
    md = paths["markdown"].read_text()
    assert "> **Warning: only 3 of 74 answers are right (4.1%)" in md
    assert md.index("Warning") < md.index("| method |")  # before the table, not under it
    assert "Warning: only 3 of 74" in paths["html"].read_text()
    enough = write_report(records(30, 74), tmp_path / "enough", n_resamples=20, plots=False)
    assert "Warning" not in enough["markdown"].read_text()


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


def write_rows(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_load_questions_reads_every_alias_field(tmp_path) -> None:
    rows = [
        {"question": "capital", "answer": "Paris", "aliases": ["Paris, France", "paris"]},
        {
            "question": "Faroe currency",
            "answer": ["Danish Krone", "DKK"],
            "answer_aliases": ["krone"],
            "normalized_aliases": ["danish krone", "dkk", "kroner"],
        },
        {  # TriviaQA
            "question": "highest mountain",
            "answer": {
                "value": "Mount Everest",
                "aliases": ["Everest", "Chomolungma"],
                "normalized_aliases": ["mount everest", "everest", "chomolungma"],
                "normalized_value": "mount everest",
                "type": "WikipediaEntity",
            },
        },
        {  # SQuAD
            "question": "who won",
            "answers": {
                "text": ["Denver Broncos", "Denver Broncos", "Broncos"],
                "answer_start": [],
            },
        },
        {"question": "moon", "answers": ["1972", 1972, {"text": "December 1972"}]},
        {"question": "both", "answer": "Lyon", "answers": ["Lyons"], "aliases": ["Lugdunum"]},
    ]
    items = load_questions(write_rows(tmp_path / "q.jsonl", *rows))
    assert [item.gold for item in items] == [
        ["Paris", "Paris, France"],
        ["Danish Krone", "DKK", "krone", "kroner"],  # the capitals of "DKK" are kept
        ["Mount Everest", "Everest", "Chomolungma"],
        ["Denver Broncos", "Broncos"],
        ["1972", "December 1972"],
        ["Lyon", "Lyons", "Lugdunum"],
    ]
    write_rows(tmp_path / "none.jsonl", {"question": "q", "aliases": [], "answers": {"text": []}})
    with pytest.raises(ConfigurationError, match=r"none.jsonl:1 .*no gold answer"):
        load_questions(tmp_path / "none.jsonl")
    write_rows(tmp_path / "bad.jsonl", {"question": "q", "answer": True})
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:1"):
        load_questions(tmp_path / "bad.jsonl")


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
        "--concurrency",  # one question at a time: the fake model's answers follow call order
        "1",
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


def loading_model() -> FakeBackend:
    """A ``py:`` model that draws a progress bar while it loads, as transformers does."""
    from tqdm.auto import tqdm

    for _ in tqdm(range(3), desc="Loading the model"):
        pass
    return fake_model()


def test_cli_no_progress_silences_every_progress_bar(tmp_path, capsys) -> None:
    from tqdm import tqdm

    data = write_questions(tmp_path / "q.jsonl", 1)
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:loading_model"]
    argv += ["--n-perturbations", "1", "--n-samples", "2", "--bootstrap", "0", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--out", str(tmp_path / "loud")]) == 0
    err = capsys.readouterr().err
    assert "Loading the model" in err and "eval" in err  # the bars are back once it is done
    for _ in tqdm(range(2), desc="after"):
        pass
    assert "after" in capsys.readouterr().err


def test_cli_eval_system_message_and_reply_length(tmp_path, capsys) -> None:
    data = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "run"
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:fake_model"]
    argv += ["--out", str(out), "--n-perturbations", "1", "--n-samples", "2", "--no-progress"]
    argv += ["--bootstrap", "0", "--no-plots", "--system", SYSTEM, "--sample-max-tokens", "12"]
    assert main(argv) == 0
    settings = json.loads((out / "run.json").read_text())
    assert settings["system"] == SYSTEM
    assert (settings["max_tokens"], settings["reply_max_tokens"]) == (12, 256)
    backend = _CLI_BACKEND[-1]
    assert {r.max_tokens for r in backend.requests_of("reply")} == {256}
    assert {r.max_tokens for r in backend.requests_of("sample")} == {12}
    assert all(r.messages[0]["content"] == SYSTEM for r in backend.requests)
    out_text = capsys.readouterr().out
    assert "WARNING: only 1 of 2 answers is right" in out_text  # two questions: too few
    assert main([*argv, "--reply-max-tokens", "64"]) == 2  # a resume must keep the reply cap
    assert "reply_max_tokens: 256 -> 64" in capsys.readouterr().err


def test_the_default_reply_cap_is_the_local_models_own() -> None:
    pytest.importorskip("transformers")
    import inspect

    from uq_guard_hf import HuggingFaceChatModel

    from uq_guard.evaluation.cli import DEFAULT_REPLY_MAX_TOKENS

    default = inspect.signature(HuggingFaceChatModel.from_pretrained).parameters["max_new_tokens"]
    assert default.default == DEFAULT_REPLY_MAX_TOKENS


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


_SHIPPED: dict[str, Path] = {}


class ModelWithGuardDefaults(FakeBackend):
    """A backend that ships a calibration and its budget, as ``HuggingFaceChatModel.default()``."""

    def __init__(self) -> None:
        super().__init__(answer)
        self.guard_defaults = {
            "calibration": str(_SHIPPED["path"]),
            "n_perturbations": 1,
            "n_samples": 2,
            "max_tokens": 12,
            "threshold": 0.25,
        }


def shipped_model() -> ModelWithGuardDefaults:
    """The CLI's ``--model py:tests.unit.test_eval_runner:shipped_model`` hook."""
    return ModelWithGuardDefaults()


def test_cli_eval_runs_a_model_as_it_ships(tmp_path, capsys) -> None:
    """No budget flags: the model's guard defaults, its calibration applied, label-free kept."""
    from uq_guard.calibration import Calibrator, PlattMapping

    _SHIPPED["path"] = Calibrator(
        mapping=PlattMapping(slope=3.0, intercept=-1.0), n_fitted=10, n_correct=3
    ).save(tmp_path / "shipped.json")
    data = write_questions(tmp_path / "q.jsonl")
    argv = ["eval", "--data", str(data), "--model", "py:tests.unit.test_eval_runner:shipped_model"]
    argv += ["--bootstrap", "0", "--no-plots", "--no-progress"]

    assert main([*argv, "--out", str(tmp_path / "as-shipped")]) == 0
    settings = json.loads((tmp_path / "as-shipped" / "run.json").read_text())
    assert (settings["n_perturbations"], settings["n_samples"], settings["max_tokens"]) == (
        1,
        2,
        12,
    )
    assert settings["calibration"] == "shipped.json"  # the file's name: a clone elsewhere resumes
    records = read_records(tmp_path / "as-shipped" / "records.jsonl")
    assert records and all(r.calibrated and r.raw_confidence is not None for r in records)
    assert all(r.confidence != r.raw_confidence for r in records)
    report = (tmp_path / "as-shipped" / "report.md").read_text()
    assert "label_free_confidence" in report and GUARD_CONFIDENCE in report

    # fitting a calibration on a calibrated run reads the label-free value, the scale it maps
    calib = tmp_path / "refit.json"
    records_path = str(tmp_path / "as-shipped" / "records.jsonl")
    assert (
        main(["calibrate", "--records", records_path, "--alpha", "0.5", "--out", str(calib)]) == 0
    )
    refit = Calibrator.load(calib)
    assert refit.n_fitted == len(records)

    # flags win over the defaults, and --calibration none turns the shipped one off
    plain = tmp_path / "plain"
    assert main([*argv, "--out", str(plain), "--calibration", "none", "--n-samples", "3"]) == 0
    settings = json.loads((plain / "run.json").read_text())
    assert settings["calibration"] is None and settings["n_samples"] == 3
    assert settings["n_perturbations"] == 1  # still the model's
    plain_records = read_records(plain / "records.jsonl")
    assert not any(r.calibrated for r in plain_records)
    assert "label_free_confidence" not in (plain / "report.md").read_text()
