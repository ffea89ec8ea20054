"""A grader model as the correctness judge: "is this answer right? yes or no".

The rules of :func:`~uq_guard.evaluation.correctness.assess_answer` (exact
match, containment) decide first; the judge is asked only when neither
matched, so a run pays one judge call per *unmatched* answer. Any
:class:`~uq_guard.backend.Backend` can judge: ``make_backend("openai:URL#model")``
for a bigger model behind an OpenAI-compatible server, or ``"local"``.

    judge = ModelJudge(make_backend("openai:http://127.0.0.1:8080/v1#grader"))
    run_eval(items, backend, config, out_dir="runs/judged", judge=judge)

The eval runner awaits :meth:`ModelJudge.ajudge` on its own event loop; calling
the judge as a plain function (the :data:`~uq_guard.evaluation.correctness.Judge`
protocol) runs the same request synchronously.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from uq_guard._sync import run_sync
from uq_guard.backend import Backend, GenerationRequest

__all__ = ["JUDGE_PROMPT", "ModelJudge", "parse_verdict"]

logger = logging.getLogger(__name__)

#: The grading question. The gold answers are listed; any one of them suffices.
JUDGE_PROMPT = (
    "You grade answers to quiz questions.\n"
    "Question: {question}\n"
    "Correct answers (any one is enough): {gold}\n"
    "Proposed answer: {answer}\n"
    "Does the proposed answer give one of the correct answers? Reply with only yes or no."
)

_YES = re.compile(r"^\W*(yes|correct|true)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|incorrect|wrong|false)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """Read a grader's reply: True for yes, False for no, None when it says neither first."""
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


class ModelJudge:
    """A :data:`~uq_guard.evaluation.correctness.Judge` backed by a model.

    Args:
        backend: the grader model.
        max_tokens: cap on the grader's reply (a word is enough).

    Attributes:
        n_asked / n_unreadable: calls made, and replies that said neither yes
            nor no (counted as wrong: an answer the grader did not confirm is
            not taken as right).
    """

    def __init__(self, backend: Backend, *, max_tokens: int = 8) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.n_asked = 0
        self.n_unreadable = 0

    def request(self, question: str, answer: str, gold: Sequence[str]) -> GenerationRequest:
        """The grading request for one answer (greedy: the model's own setting)."""
        prompt = JUDGE_PROMPT.format(question=question, gold="; ".join(gold), answer=answer)
        return GenerationRequest(
            messages=({"role": "user", "content": prompt},), max_tokens=self.max_tokens
        )

    async def ajudge(self, question: str, answer: str, gold: Sequence[str]) -> bool:
        """Ask the grader; True when it says yes.

        Raises:
            the backend's error when the call failed outright (the eval
            runner then records the question as failed, with the reason).
        """
        [generation] = await self.backend.generate([self.request(question, answer, gold)])
        self.n_asked += 1
        if not generation.ok:
            raise generation.error or RuntimeError("the judge returned no answer")
        verdict = parse_verdict(generation.texts[0])
        if verdict is None:
            self.n_unreadable += 1
            logger.warning("judge reply is neither yes nor no: %r", generation.texts[0][:80])
            return False
        return verdict

    def __call__(self, question: str, answer: str, gold: Sequence[str]) -> bool:
        return run_sync(self.ajudge(question, answer, gold))
