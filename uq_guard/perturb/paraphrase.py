"""Model paraphrase: ask the model itself for m rewordings of the prompt (one call).

This is the Inv-Entropy reference code's perturbation method. Small models
answer such requests untidily, so :func:`parse_paraphrases` is forgiving: it
strips numbering, bullets, quotes and preambles ("Here are ..."), drops
empty lines, duplicates and copies of the original, and never returns more
than asked. Fewer than asked is fine: the engine works with what came back
and the report says so (the reference implementation indexed past the end).
"""

from __future__ import annotations

import re

from uq_guard.backend import Backend, GenerationRequest
from uq_guard.perturb.base import PerturbationResult

PARAPHRASE_INSTRUCTION = (
    "Rewrite the following question in {m} different ways. Keep its meaning exactly; "
    "vary the wording. Write one rewrite per line, without numbering or any other text.\n\n"
    "Question: {prompt}"
)

_LIST_MARKER = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}\s*[.):\]](?!\d)|\d{1,3}\s+-)\s*")
_LABEL = re.compile(
    r"^\s*(?:paraphrase|rewrite|rephrase|version|variant|option|question)\s*\d*\s*[:.)-]\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    # a preamble opens with one of these and is not itself a question
    r"^\s*(?:here (?:are|is)|sure|certainly|of course|okay|ok|these are|below are)\b"
    r"(?:.*[^?\s])?\s*$",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"


def _clean_line(line: str) -> str:
    line = _LIST_MARKER.sub("", line)
    line = _LABEL.sub("", line)
    line = line.strip().strip(_QUOTES).strip()
    return re.sub(r"\s+", " ", line)


def parse_paraphrases(text: str, original: str, m: int) -> list[str]:
    """At most ``m`` distinct, non-empty rewordings found in a model's ``text``.

    Args:
        text: the model's raw answer to the paraphrase request.
        original: the prompt that was paraphrased (copies of it are dropped).
        m: how many to keep at most.
    """
    if m <= 0:
        return []
    seen = {original.strip().casefold()}
    kept: list[str] = []
    for raw_line in text.splitlines():
        if _PREAMBLE.match(raw_line) or raw_line.rstrip().endswith(":"):
            continue
        line = _clean_line(raw_line)
        key = line.casefold()
        if not line or key in seen:
            continue
        seen.add(key)
        kept.append(line)
        if len(kept) == m:
            break
    return kept


class ModelParaphraser:
    """Perturb a prompt by asking a model for ``m`` paraphrases in one call.

    Args:
        backend: the model to ask (usually the guarded model itself).
        temperature: sampling temperature of the paraphrase request.
        max_tokens: cap on the paraphrase answer's length.
        instruction: template with ``{m}`` and ``{prompt}`` placeholders.
    """

    method = "paraphrase"

    def __init__(
        self,
        backend: Backend,
        *,
        temperature: float = 0.7,
        max_tokens: int = 512,
        instruction: str = PARAPHRASE_INSTRUCTION,
    ) -> None:
        self.backend = backend
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.instruction = instruction

    def request(self, prompt: str, m: int) -> GenerationRequest:
        """The single request that asks for the paraphrases."""
        content = self.instruction.format(m=m, prompt=prompt)
        return GenerationRequest(
            messages=({"role": "user", "content": content},),
            n=1,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )

    async def perturb(self, prompt: str, m: int) -> PerturbationResult:
        if m == 0:
            return PerturbationResult(prompts=[], method=self.method, n_requested=0)
        [answer] = await self.backend.generate([self.request(prompt, m)])
        degraded: list[str] = []  # both lose perturbations the estimate was meant to have
        prompts: list[str] = []
        if answer.ok:
            prompts = parse_paraphrases(answer.texts[0], prompt, m)
        else:
            degraded.append(f"paraphrase request failed: {answer.error}")
        if len(prompts) < m:
            degraded.append(f"paraphraser returned {len(prompts)} of {m} perturbations")
        return PerturbationResult(
            prompts=prompts,
            method=self.method,
            n_requested=m,
            usage=answer.usage,
            degraded_reasons=degraded,
        )
