"""The model judge: reading a grader's yes/no, and how the eval runner uses it."""

from __future__ import annotations

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import GuardConfig
from uq_guard.embeddings import shared_embedder
from uq_guard.evaluation.judge import ModelJudge, parse_verdict
from uq_guard.evaluation.records import EvalItem
from uq_guard.evaluation.runner import run_eval


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Yes", True),
        ("yes.", True),
        ("  **Yes**, it is.", True),
        ("Correct", True),
        ("No", False),
        ("no, the answer is Paris", False),
        ("Incorrect.", False),
        ("Wrong", False),
        ("The answer is yes", None),  # not the first word: not read
        ("Yesterday", None),
        ("", None),
        ("Maybe", None),
    ],
)
def test_parse_verdict(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_the_judge_is_a_plain_judge_callable_too() -> None:
    backend = FakeBackend(reply="Yes.")
    judge = ModelJudge(backend)
    assert judge("Capital of France?", "It's the city of Paris", ["Paris"]) is True
    [request] = backend.requests
    prompt = request.messages[0]["content"]
    assert "Capital of France?" in prompt and "It's the city of Paris" in prompt
    assert "Paris" in prompt and request.temperature is None and request.max_tokens == 8


def test_an_unreadable_verdict_counts_as_wrong_and_is_counted() -> None:
    judge = ModelJudge(FakeBackend(reply="Hmm, hard to say."))
    assert judge("q", "a", ["b"]) is False
    assert (judge.n_asked, judge.n_unreadable) == (1, 1)


ITEMS = [
    EvalItem(id="0", question="What is the capital of France?", gold=["Paris"]),
    EvalItem(id="1", question="How many sides has a hexagon?", gold=["six", "6"]),
]
REPLIES = {ITEMS[0].question: "Paris.", ITEMS[1].question: "A hexagon has half a dozen."}
CONFIG = GuardConfig(n_perturbations=1, n_samples=2, n_bootstrap=5, gaap_lexicon="none")


def reply_for(prompt: str, index: int) -> str:
    return REPLIES.get(prompt, "Paris.")


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def test_the_runner_asks_the_judge_only_when_no_rule_matched(tmp_path, embedder) -> None:
    judge = ModelJudge(FakeBackend(reply="Yes"))
    records = run_eval(
        ITEMS, FakeBackend(reply_for), CONFIG, out_dir=tmp_path, embedder=embedder, judge=judge
    ).records
    assert [r.correctness_rule for r in records] == ["exact_match", "judge"]
    assert records[1].correct and judge.n_asked == 1


def test_a_failing_judge_fails_the_question_not_the_run(tmp_path, embedder) -> None:
    grader = FakeBackend(reply="Yes").fail(when="reply", error=RuntimeError("grader down"))
    run = run_eval(
        ITEMS,
        FakeBackend(reply_for),
        CONFIG,
        out_dir=tmp_path,
        embedder=embedder,
        judge=ModelJudge(grader),
    )
    assert run.records[0].ok and run.records[0].correct
    assert not run.records[1].ok and "the judge failed" in run.records[1].error
    assert "grader down" in run.records[1].error and run.n_failed == 1
