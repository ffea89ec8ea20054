"""A small scripted :class:`~uq_guard.backend.Backend` for unit tests.

``FakeBackend`` answers by prompt text (the last user message of each
request), can fail chosen requests with chosen exceptions a set number of
times (optionally keeping some answers: a partial failure), counts calls and
records every request it was sent, so a test can check what the engine really
asked for and what it cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uq_guard._messages import user_prompt
from uq_guard.backend import Generation, GenerationRequest, Usage

#: The question most engine tests ask, a steady answer, and faithful rewordings of it.
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
PARAPHRASES = [
    "Which city is the capital of France?",
    "What city serves as France's capital?",
    "Name the capital city of France.",
]

PARAPHRASE_MARKER = "Rewrite the following question"
VERBALIZED_MARKER = "How confident are you that your answer above is correct"

#: Answers with nothing in common, for "erratic model" scenarios.
UNRELATED = (
    "Paris is the capital of France.",
    "Bananas are rich in potassium.",
    "The Pacific is the largest ocean on Earth.",
    "Mozart composed The Magic Flute in 1791.",
    "A hexagon has six sides.",
    "Photosynthesis turns light into chemical energy.",
    "The stock market fell sharply on Tuesday.",
    "Penguins cannot fly but swim very well.",
    "Rust guarantees memory safety without a garbage collector.",
    "The recipe needs two cups of flour and an egg.",
    "Mount Everest is in the Himalayas.",
    "My favourite colour is green.",
)

Answerer = Callable[[str, int], str]


def prompt_of(request: GenerationRequest) -> str:
    """The text of a request's last user message."""
    return user_prompt(request.messages)


def kind_of(request: GenerationRequest) -> str:
    """What a request asks for: ``"paraphrase"``, ``"verbalized"``, ``"reply"`` or ``"sample"``.

    ``"verbalized"`` is the "how sure are you?" question; a ``"reply"`` has no
    temperature (the model's own setting).
    """
    if PARAPHRASE_MARKER in prompt_of(request):
        return "paraphrase"
    if VERBALIZED_MARKER in prompt_of(request):
        return "verbalized"
    if request.temperature is None:
        return "reply"
    return "sample"


def erratic(prompt: str, index: int) -> str:
    """An answerer whose every answer is about something else."""
    return UNRELATED[index % len(UNRELATED)]


@dataclass
class _Failure:
    matches: Callable[[GenerationRequest], bool]
    error: BaseException
    times: int | None  # None: forever
    keep: int  # answers returned along with the error (a partial failure)


class FakeBackend:
    """Scripted answers, scripted failures, counted calls.

    Args:
        answers: how to answer a sample: one string for every sample, a
            mapping from prompt text to a string or a list of strings (cycled),
            or a callable ``(prompt, i)`` where ``i`` counts every sample
            text this backend has produced so far.
        reply: the reply to the user's prompt (the request without a
            temperature); defaults to what ``answers`` gives for it.
        paraphrases: the lines returned to a paraphrase request.
        paraphrase_text: the raw text returned to a paraphrase request
            (overrides ``paraphrases``).
        raw_prefix: each answer's native object is ``raw_prefix + text``.
        verbalized: the answer to the verbalized-confidence question.

    Attributes:
        requests: every request received, in order (retries included).
        rounds: each ``generate`` call's batch of requests.
    """

    def __init__(
        self,
        answers: str | Mapping[str, str | Sequence[str]] | Answerer = (
            "Paris is the capital of France."
        ),
        *,
        reply: str | None = None,
        paraphrases: Sequence[str] = (),
        paraphrase_text: str | None = None,
        raw_prefix: str = "native:",
        verbalized: str = "85",
    ) -> None:
        self._verbalized = verbalized
        self._answers = answers
        self._reply = reply
        self._paraphrase_text = (
            paraphrase_text if paraphrase_text is not None else "\n".join(paraphrases)
        )
        self._raw_prefix = raw_prefix
        self._failures: list[_Failure] = []
        self._produced = 0
        self.requests: list[GenerationRequest] = []
        self.rounds: list[list[GenerationRequest]] = []
        self.raise_on_generate: BaseException | None = None
        self.drop_last_generation = False
        self.delay_s = 0.0

    # -- scripting ---------------------------------------------------------

    def fail(
        self,
        when: str | Callable[[GenerationRequest], bool],
        error: BaseException,
        *,
        times: int | None = 1,
        keep: int = 0,
    ) -> FakeBackend:
        """Fail matching requests with ``error``, ``times`` times (None: always).

        ``when`` is ``"reply"``, ``"sample"``, ``"paraphrase"``, ``"verbalized"``,
        ``"any"``, a predicate over the request, or any other string: the
        sample requests whose prompt is exactly that text.
        """
        if callable(when):
            matches = when
        elif when == "any":

            def matches(request: GenerationRequest) -> bool:
                return True
        elif when in ("reply", "sample", "paraphrase", "verbalized"):

            def matches(request: GenerationRequest, _kind: str = when) -> bool:
                return kind_of(request) == _kind
        else:

            def matches(request: GenerationRequest, _prompt: str = when) -> bool:
                return kind_of(request) == "sample" and prompt_of(request) == _prompt

        self._failures.append(_Failure(matches, error, times, keep))
        return self

    # -- what it was asked ---------------------------------------------------

    @property
    def calls(self) -> int:
        """Requests answered (or failed) so far: one model call each."""
        return len(self.requests)

    def requests_of(self, kind: str) -> list[GenerationRequest]:
        return [r for r in self.requests if kind_of(r) == kind]

    def calls_for(self, prompt: str) -> int:
        """Sample requests sent for the prompt ``prompt``."""
        return sum(1 for r in self.requests_of("sample") if prompt_of(r) == prompt)

    # -- the Backend protocol ------------------------------------------------

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        batch = list(requests)
        self.rounds.append(batch)
        self.requests.extend(batch)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.raise_on_generate is not None:
            raise self.raise_on_generate
        answers = [self._answer(request) for request in batch]
        if self.drop_last_generation:
            answers = answers[:-1]
        return answers

    def _answer(self, request: GenerationRequest) -> Generation:
        failure = self._take_failure(request)
        kind = kind_of(request)
        count = request.n if failure is None else min(failure.keep, request.n)
        texts = [self._text(request, kind) for _ in range(count)]
        return Generation(
            texts=texts,
            token_logprobs=[[-0.1] * 4 for _ in texts] if request.want_logprobs else None,
            raw=[self._raw_prefix + t for t in texts],
            usage=Usage(prompt_tokens=10, completion_tokens=5 * len(texts), model_calls=1),
            error=None if failure is None else failure.error,
        )

    def _take_failure(self, request: GenerationRequest) -> _Failure | None:
        for failure in self._failures:
            if failure.times != 0 and failure.matches(request):
                if failure.times is not None:
                    failure.times -= 1
                return failure
        return None

    def _text(self, request: GenerationRequest, kind: str) -> str:
        prompt = prompt_of(request)
        if kind == "paraphrase":
            return self._paraphrase_text
        if kind == "verbalized":
            return self._verbalized
        if kind == "reply" and self._reply is not None:
            return self._reply
        index = self._produced
        if kind != "reply":
            self._produced += 1
        return _lookup(self._answers, prompt, index)


def _lookup(answers: Any, prompt: str, index: int) -> str:
    if isinstance(answers, str):
        return answers
    if callable(answers):
        return answers(prompt, index)
    value = answers[prompt]
    if isinstance(value, str):
        return value
    return value[index % len(value)]
