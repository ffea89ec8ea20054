"""Lexicons: WordNet (real corpus), the model lexicon (scripted backend), user dicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.unit.fake_backend import FakeBackend, prompt_of
from uq_guard import ConfigurationError, GuardConfig
from uq_guard.perturb import (
    CombinedLexicon,
    ModelLexicon,
    NoLexicon,
    UserLexicon,
    WordNetLexicon,
    default_lexicon,
)
from uq_guard.perturb.lexicon import inflect_like, parse_substitutes, wordnet_substitutes

needs_wordnet = pytest.mark.usefixtures("wordnet")

# -- WordNet ---------------------------------------------------------------------------


@needs_wordnet
def test_wordnet_gives_synonyms_hypernyms_and_hyponyms_of_one_part_of_speech() -> None:
    options, pos = wordnet_substitutes("capital")
    assert pos == "n"
    assert "working capital" in options  # a synonym, its lemma cleaned of "_"
    assert "assets" in options and "seat" in options  # hypernyms
    assert "venture capital" in options  # a hyponym
    assert "capital" not in options
    assert all("_" not in option for option in options)
    _, verb_pos = wordnet_substitutes("run")
    assert verb_pos == "v"  # 41 verb senses against 16 noun senses


@needs_wordnet
def test_wordnet_keeps_the_inflection_and_knows_nothing_of_other_languages() -> None:
    options, _ = wordnet_substitutes("eagles")
    assert "birds of prey" in options and "raptors" in options
    assert wordnet_substitutes("Hauptstadt") == ((), None)


@needs_wordnet
async def test_the_wordnet_lexicon_answers_for_every_word() -> None:
    found = await WordNetLexicon().substitutes(["moon", "qwzx"], "when did we land on the moon")
    assert found.lexicon == "wordnet"
    assert "satellite" in found.options["moon"]
    assert found.options["qwzx"] == []
    assert found.pos == {"moon": "n"}
    assert found.usage.model_calls == 0


@pytest.mark.parametrize(
    ("word", "lemma", "phrase", "expected"),
    [
        ("eagles", "eagle", "bird of prey", "birds of prey"),
        ("cities", "city", "town", "towns"),
        ("boxes", "box", "case", "cases"),
        ("lyrics", "lyric", "words", "words"),
        ("walked", "walk", "stroll", "strolled"),
        ("making", "make", "create", "creating"),
        ("capital", "capital", "seat", "seat"),
    ],
)
def test_inflect_like(word: str, lemma: str, phrase: str, expected: str) -> None:
    assert inflect_like(word, lemma, phrase) == expected


# -- the model lexicon --------------------------------------------------------------------


def test_parse_substitutes_reads_untidy_answers() -> None:
    text = (
        "Sure! Here are some substitutes:\n"
        "1. **Capital**: seat of government, chief city; metropolis\n"
        "- france -> Gaul\n"
        "earths: soil, ground\n"
        "moon - satellite / lunar body, capital, moon\n"
        "unrelated: thing\n"
        "capital: Metropolis, a very long substitute that has far too many words in it\n"
    )
    found = parse_substitutes(text, ["capital", "moon", "earth"])
    assert found["capital"] == ["seat of government", "chief city", "metropolis"]
    assert found["moon"] == ["satellite", "lunar body", "capital"]
    assert found["earth"] == ["soil", "ground"]  # a plural head still counts
    assert parse_substitutes("", ["x"]) == {"x": []}
    assert parse_substitutes("::::\n-\n: :", ["x"]) == {"x": []}


async def test_the_model_lexicon_asks_once_for_all_words() -> None:
    def answer(prompt: str, i: int) -> str:
        return "capital: seat, chief city\nmoon: satellite"

    backend = FakeBackend(answer)
    found = await ModelLexicon(backend).substitutes(
        ["capital", "moon", "capital"], "What is the capital of the moon?"
    )
    assert backend.calls == 1
    [request] = backend.requests
    assert prompt_of(request) == "Substitutes for: capital, moon"
    assert "What is the capital of the moon?" in request.messages[0]["content"]
    assert found.lexicon == "model"
    assert found.options == {"capital": ["seat", "chief city"], "moon": ["satellite"]}
    assert found.usage.model_calls == 1


async def test_a_failed_model_lexicon_call_gives_no_substitutes_and_a_note() -> None:
    backend = FakeBackend("unused").fail("any", RuntimeError("boom"))
    found = await ModelLexicon(backend).substitutes(["capital"], "the capital")
    assert found.options == {"capital": []}
    assert found.degraded_reasons and "boom" in found.degraded_reasons[0]


# -- user dicts, unions and the choice -------------------------------------------------------


async def test_user_and_combined_lexicons() -> None:
    user = UserLexicon({"Capital": ["seat", "capital", "seat"]})
    found = await user.substitutes(["capital", "moon"], "")
    assert found.options == {"capital": ["seat"], "moon": []}
    both = CombinedLexicon([user, UserLexicon({"capital": ["metropolis", "seat"]})])
    merged = await both.substitutes(["capital"], "")
    assert both.name == "user+user"
    assert merged.options == {"capital": ["seat", "metropolis"]}
    assert (await NoLexicon().substitutes(["a"], "")).options == {"a": []}


@needs_wordnet
def test_auto_picks_wordnet_when_installed_and_joins_a_user_dict() -> None:
    assert default_lexicon("auto").name == "wordnet"
    assert default_lexicon("auto", user_substitutions={"a": ["b"]}).name == "user+wordnet"


def test_auto_without_wordnet_falls_back_to_the_model_then_the_user_dict(monkeypatch) -> None:
    monkeypatch.setattr("uq_guard.perturb.wordnet.wordnet_available", lambda: False)
    backend = FakeBackend()
    assert default_lexicon("auto", backend=backend).name == "model"
    assert default_lexicon("auto", user_substitutions={"a": ["b"]}).name == "user"
    assert default_lexicon("auto").name == "none"
    with pytest.raises(ConfigurationError, match="uq-guard setup wordnet"):
        default_lexicon("wordnet")


def test_lexicon_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="gaap_lexicon"):
        GuardConfig(gaap_lexicon="thesaurus")
    with pytest.raises(ConfigurationError, match="gaap_substitutions"):
        GuardConfig(gaap_lexicon="user")
    with pytest.raises(ConfigurationError, match="gaap_key_ratio"):
        GuardConfig(gaap_key_ratio=0)
    config = GuardConfig(gaap_lexicon="user", gaap_substitutions={"a": ["b"]})
    assert config.perturbation == "gaap" and config.gaap_max_population == 64
    with pytest.raises(ConfigurationError, match="needs a model"):
        default_lexicon("model")


def test_wordnet_preloads_in_the_background_once_and_lookups_wait_for_it(wordnet) -> None:
    # a fresh process: the corpus must not be loaded yet when the lexicon is built; then
    # lookups from many threads at once (nltk's reader alone breaks: IndexError, garbled synsets)
    code = """
import threading
from uq_guard.perturb import wordnet_lexicon as lexicon
assert not lexicon._WORDNET
lex = lexicon.WordNetLexicon()  # starts the preload
assert lexicon.preload_wordnet() is lexicon._PRELOAD[0]  # a second lexicon: the same load
results = {}
def look(words):
    for word in words:
        results[word] = lexicon.wordnet_substitutes(word)[0]
groups = [("capital", "dog"), ("city", "house"), ("river", "music"), ("ocean", "king"),
          ("president", "movie"), ("war", "school"), ("bird", "water"), ("money", "game")]
threads = [threading.Thread(target=look, args=(g,)) for g in groups]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(lexicon._WORDNET) == 1
assert lexicon.preload_wordnet() is None  # already loaded: nothing more to start
print(sorted(results), len(results) == 16, "working capital" in results["capital"])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("True True")  # all 16 words, and the right substitutes
