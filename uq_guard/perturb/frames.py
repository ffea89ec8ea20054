"""Meaning-neutral edits: change the form of a prompt, never what it asks.

Inv-Entropy reads it as doubt when the answers move *with* the prompts
(ALGORITHMS.md §3, "Answer preservation"), so GAAP's variants must keep the
question. Word substitutions cannot always promise that; the edits here can,
because they leave every word of the prompt in place. They follow SPUQ (Gao
et al., 2024), which perturbs prompts the same way. Three families, each one
gene of a GAAP individual (``""`` is the gene's neutral value, the prompt as
the user wrote it):

* **frames** (:data:`FRAMES`): an instruction frame or filler opening around
  the prompt (``"Question: {}"``, ``"So, {}"``); an opening that continues the
  sentence lowers the prompt's first letter unless it starts a name or "I";
* **closings** (:data:`CLOSINGS`): a courtesy after the prompt
  (``"Thanks."``), never an instruction about the answer's form (that would
  move every answer, right or wrong, the same way);
* **surface** (:data:`SURFACE`): punctuation and casing: the final question
  mark dropped or doubled, the first letter in lower case (names keep theirs).

None of them asks for a style of answer ("briefly", "in one word"): a frame
that changed the answers' length would move right and wrong answers alike and
hide the signal the perturbation is there to reveal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "CLOSINGS",
    "FRAMES",
    "FRAME_GENES",
    "SURFACE",
    "apply_frames",
    "frame_options",
]

FRAMES: tuple[str, ...] = (
    "Question: {}",
    "Q: {}",
    "Please answer the following question. {}",
    "I have a question. {}",
    "Here is something I would like to know. {}",
    "Can you help me with this? {}",
    "So, {}",
    "Hey, {}",
    "Quick question: {}",
)
"""Openings around the prompt (``{}`` is the prompt)."""

CLOSINGS: tuple[str, ...] = (
    "Thanks.",
    "Thank you!",
    "I am curious.",
    "Any idea?",
)
"""Courtesies after the prompt."""

SURFACE: tuple[str, ...] = ("no_final_mark", "double_final_mark", "lower_first")
"""Punctuation and casing edits, by name."""

FRAME_GENES: tuple[str, ...] = ("frame", "closing", "surface")
"""The genes a GAAP individual carries after its word slots, in this order."""

_FINAL_MARK = re.compile(r"([?.!])(\s*)$")
_CONTINUES = re.compile(r",\s*\{\}$")  # "So, {}": the prompt continues the sentence


def frame_options() -> dict[str, tuple[str, ...]]:
    """The non-neutral values of each gene, in :data:`FRAME_GENES` order."""
    return {"frame": FRAMES, "closing": CLOSINGS, "surface": SURFACE}


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    # a name ("Paris is ...", "NASA") or "I" keeps its capital
    if first[:1].isupper() and first[1:2].islower() and first.lower() not in _OPENERS:
        return text
    if first == "I" or first.isupper():
        return text
    return text[:1].lower() + text[1:]


# sentence openers that are not names: lowered after a continuing frame
_OPENERS = frozenset(
    """what which who whom whose when where why how is are was were do does did can could
    should would will name list tell give explain describe define find in on at for the a an
    if please""".split()  # noqa: SIM905
)


def apply_frames(prompt: str, genes: Mapping[str, str]) -> str:
    """``prompt`` with the frame, closing and surface edits that ``genes`` names.

    Args:
        prompt: the (possibly word-edited) prompt.
        genes: gene name -> value; a missing gene or ``""`` leaves that part as it is.

    Returns:
        The edited prompt. The words of ``prompt`` all survive, in order.
    """
    text = prompt.strip()
    surface = genes.get("surface", "")
    if surface == "no_final_mark":
        text = _FINAL_MARK.sub(r"\2", text).rstrip()
    elif surface == "double_final_mark":
        text = _FINAL_MARK.sub(r"\1\1\2", text) if _FINAL_MARK.search(text) else text + "??"
    elif surface == "lower_first":
        text = _lower_first(text)
    frame = genes.get("frame", "")
    if frame:
        body = _lower_first(text) if _CONTINUES.search(frame) else text
        text = frame.format(body)
    closing = genes.get("closing", "")
    if closing:
        text = f"{text} {closing}" if text[-1:] in "?.!" else f"{text}. {closing}"
    return text
