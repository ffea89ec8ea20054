"""GAAP keeps what the prompt asks: protected answer words, senses in context, neutral frames.

Inv-Entropy reads answers that move with the prompts as doubt, so a
perturbation that changes the question ("6 times 9" -> "6 modern world 9")
makes a model that knows the answer look unsure (ALGORITHMS.md §3, "Answer
preservation"). Real MiniLM embedder, real WordNet.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.fake_backend import FakeBackend
from uq_guard import Guard
from uq_guard.embeddings import shared_embedder
from uq_guard.perturb import GAAPPerturber, WordNetLexicon
from uq_guard.perturb.frames import CLOSINGS, FRAMES, apply_frames
from uq_guard.perturb.gaap import ANSWER_WORDS, segment

pytestmark = pytest.mark.usefixtures("wordnet")

TEMPLATED = [
    ("What is 39 minus 13?", ["39", "minus", "13"]),
    ("What is 6 times 9?", ["6", "times", "9"]),
    ("What currency is used in Peru?", ["currency", "Peru"]),
    ("What is the capital of the US state of Ohio?", ["capital", "state", "Ohio"]),
    ("Who wrote the novel Moby Dick?", ["wrote", "Moby Dick"]),
    ("What is the largest planet in the solar system?", ["largest"]),
]


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def keeps(variant: str, words: list[str]) -> bool:
    return all(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", variant, re.IGNORECASE) for w in words)


# -- the meaning-neutral genes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("genes", "expected"),
    [
        ({"frame": "Question: {}"}, "Question: What is 6 times 9?"),
        ({"frame": "So, {}"}, "So, what is 6 times 9?"),
        ({"closing": "Thanks."}, "What is 6 times 9? Thanks."),
        ({"surface": "no_final_mark"}, "What is 6 times 9"),
        ({"surface": "double_final_mark"}, "What is 6 times 9??"),
        ({"surface": "lower_first"}, "what is 6 times 9?"),
        ({"frame": "", "closing": "", "surface": ""}, "What is 6 times 9?"),
    ],
)
def test_each_gene_changes_the_form_only(genes, expected) -> None:
    assert apply_frames("What is 6 times 9?", genes) == expected


def test_a_continuing_frame_keeps_a_name_capitalised() -> None:
    assert apply_frames("Paris is in France.", {"frame": "So, {}"}) == "So, Paris is in France."
    assert apply_frames("NASA was founded when?", {"frame": "Hey, {}"}).startswith("Hey, NASA")


def test_a_closing_after_a_prompt_without_a_final_mark_reads_as_a_new_sentence() -> None:
    text = apply_frames("where does the name galvez come from", {"closing": "Any idea?"})
    assert text == "where does the name galvez come from. Any idea?"


def test_no_frame_asks_for_a_style_of_answer() -> None:
    # an instruction about the answer's form would move right and wrong answers alike
    for text in (*FRAMES, *CLOSINGS):
        assert not re.search(r"brief|short|one word|few words|explain|detail", text, re.I)


# -- what the answer depends on is never edited -------------------------------------------------


def test_answer_words_are_never_key_tokens_when_preserving() -> None:
    slots = segment("What is 39 minus 13 and the capital of Peru?", fixed_words=ANSWER_WORDS)
    candidates = {slot.text for slot in slots if slot.kind == "word" and slot.candidate}
    assert not candidates & {"minus", "capital"}
    paper = segment("What is 39 minus 13 and the capital of Peru?")
    assert {"minus", "capital"} <= {s.text for s in paper if s.kind == "word" and s.candidate}


@pytest.mark.parametrize(("question", "needed"), TEMPLATED)
async def test_default_gaap_keeps_the_question(embedder, question, needed) -> None:
    lexicon = WordNetLexicon(embedder=embedder, sense="context")
    result = await GAAPPerturber(embedder, lexicon).perturb(question, 9)
    assert result.real_count == 9  # the neutral genes always give a full set
    for variant in result.prompts:
        assert keeps(variant, needed), variant


async def test_the_published_gaap_changes_the_question(embedder) -> None:
    # the defect the default avoids: shown on the same questions, so the test above can fail
    paper = GAAPPerturber(embedder, WordNetLexicon(), edits="paper", frames=False)
    changed = 0
    for question, needed in TEMPLATED[:4]:
        result = await paper.perturb(question, 9)
        changed += sum(not keeps(v, needed) for v in result.prompts[: result.real_count])
    assert changed >= 5


async def test_preserving_gaap_deletes_only_filler_words(embedder) -> None:
    lexicon = WordNetLexicon(embedder=embedder, sense="context")
    gaap = GAAPPerturber(embedder, lexicon, frames=False, key_ratio=1.0)
    result = await gaap.perturb("Please tell me exactly which river flows through Cairo", 9)
    for variant in result.prompts:
        assert keeps(variant, ["tell", "river", "flows", "Cairo"]) or "flow" in variant.lower()
        assert len(variant.split()) >= 7  # at most the two filler words went


async def test_a_prompt_without_editable_words_still_gets_neutral_variants(embedder) -> None:
    result = await GAAPPerturber(embedder, WordNetLexicon()).perturb("1 2 3 4", 5)
    assert result.real_count == 5
    assert all(re.search(r"1 2 3 4", variant) for variant in result.prompts)


# -- the sense that fits -----------------------------------------------------------------


def test_wordnet_takes_synonyms_from_the_sense_that_fits_the_prompt(embedder) -> None:
    lexicon = WordNetLexicon(embedder=embedder, sense="context", preload=False)
    river = lexicon.lookup(["bank"], "We had a picnic on the grassy bank of the river").options
    money = lexicon.lookup(["bank"], "I deposited my salary at the bank downtown").options
    assert river["bank"] != money["bank"]
    assert not any("financial" in option or "depository" in option for option in river["bank"])


def test_wordnet_in_context_gives_no_hypernyms_or_broken_forms(embedder) -> None:
    lexicon = WordNetLexicon(embedder=embedder, sense="context", preload=False)
    found = lexicon.lookup(["used"], "What currency is used in Peru?").options["used"]
    everything = WordNetLexicon(preload=False).lookup(["used"]).options["used"]
    assert set(found) < set(everything)
    assert "puted" not in found and "exercised" not in found


def test_a_compared_adjective_gets_no_substitutes(embedder) -> None:
    lexicon = WordNetLexicon(embedder=embedder, sense="context", preload=False)
    found = lexicon.lookup(["tallest"], "Which is the tallest building in Asia?").options
    assert found["tallest"] == []


# -- in the engine -------------------------------------------------------------------------


def test_guard_settings_reach_gaap(embedder) -> None:
    backend = FakeBackend("Lima")
    default = Guard(backend, embedder=embedder)
    assert default.perturber.edits == "preserving" and default.perturber.frames
    paper = Guard(backend, embedder=embedder, gaap_edits="paper", gaap_frames=False)
    assert paper.perturber.edits == "paper" and not paper.perturber.frames
