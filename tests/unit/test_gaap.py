"""GAAP: each operator alone, then whole runs (real MiniLM embedder, real WordNet)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.fake_backend import FakeBackend, prompt_of
from uq_guard import Guard
from uq_guard.embeddings import shared_embedder
from uq_guard.perturb import GAAPPerturber, NoLexicon, UserLexicon, WordNetLexicon
from uq_guard.perturb.gaap import (
    crossover,
    draw_across_generations,
    fidelity,
    initial_population,
    mutate,
    protected_spans,
    render,
    roulette_select,
    segment,
    select_key_positions,
    substitution_sets,
    words_of,
)

QUESTION = "What is the capital of France?"
NQ_QUESTION = "when was the last time anyone was on the moon"
USER_WORDS = {
    "capital": ["seat of government", "chief city", "metropolis"],
    "moon": ["lunar surface", "satellite"],
    "time": ["occasion", "moment"],
    "anyone": ["anybody", "a person"],
    "last": ["final", "most recent"],
}
needs_wordnet = pytest.mark.usefixtures("wordnet")


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def gaap(embedder, lexicon=None, **settings) -> GAAPPerturber:
    return GAAPPerturber(embedder, lexicon or UserLexicon(USER_WORDS), **settings)


# -- protected spans and segmentation ------------------------------------------------


def test_segmenting_keeps_every_character() -> None:
    text = 'Who wrote "Hey Jude" in 1968, and what does `len(x)` return? Ask Paul.'
    assert "".join(slot.text for slot in segment(text)) == text


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("how tall is the tower at 324 metres", "324"),
        ('who sang "let it be" on the album', '"let it be"'),
        ("what does `os.path.join` do with two parts", "`os.path.join`"),
        ("what does my_function(x) return here", "my_function(x)"),
        ("where did Barack Obama study law", "Barack Obama"),
        ("what is covid-19 and how does it spread", "covid-19"),
    ],
)
def test_numbers_quotes_code_and_names_are_protected(text: str, kept: str) -> None:
    spans = [text[start:end] for start, end in protected_spans(text)]
    assert any(kept in span for span in spans)
    words = [slot.text for slot in segment(text) if slot.kind == "word"]
    assert all(word not in kept for word in words)


def test_a_sentence_opening_question_word_is_not_a_name() -> None:
    spans = [QUESTION[a:b] for a, b in protected_spans(QUESTION)]
    assert spans == ["France"]


def test_caller_marked_spans_are_protected_case_insensitively() -> None:
    text = "how far is the moon from the earth"
    spans = [text[a:b] for a, b in protected_spans(text, ["The Moon"])]
    assert spans == ["the moon"]


def test_render_deletes_a_word_and_its_space() -> None:
    slots = segment(QUESTION)
    words = list(words_of(slots))
    assert render(slots, words) == QUESTION
    words[words.index("capital")] = ""
    assert render(slots, words) == "What is the of France?"
    first = list(words_of(slots))
    first[0] = ""
    assert render(slots, first) == "is the capital of France?"


# -- key tokens and substitution sets ---------------------------------------------------


def test_key_tokens_are_the_words_closest_to_the_prompt() -> None:
    slots = segment(NQ_QUESTION)
    similarities = {i: 0.1 * i for i, s in enumerate(s for s in slots if s.kind == "word")}
    # 10 words, key_ratio 0.3 -> 3 keys, most similar first
    assert select_key_positions(slots, similarities, 0.3) == [9, 8, 7]
    assert select_key_positions(slots, similarities, 0.3, max_keys=2) == [9, 8]
    assert select_key_positions(slots, {}, 0.3) == []


async def test_keybert_rule_picks_topic_words_with_the_real_embedder(embedder) -> None:
    run, _ = await gaap(embedder).run(NQ_QUESTION, 5)
    assert "moon" in run.key_words
    assert not {"the", "was", "when", "on"} & set(run.key_words)
    assert len(run.key_words) == 3  # ceil(0.3 * 10 words)


def test_substitution_sets_end_with_deletion_and_match_case() -> None:
    words = ("Capital", "of", "France")
    sets = substitution_sets(words, [0], {"Capital": ["seat", "capital", "chief city"]}, 5)
    assert sets == {0: ("Seat", "Chief city", "")}
    assert substitution_sets(words, [0], {}, 5) == {0: ("",)}


def test_initial_population_is_every_single_substitution() -> None:
    original = ("a", "b", "c")
    population = initial_population(original, {0: ("x", ""), 2: ("y",)})
    assert population == [("x", "b", "c"), ("", "b", "c"), ("a", "b", "y")]


# -- the operators -----------------------------------------------------------------------


def test_roulette_frequencies_follow_fitness() -> None:
    rng = np.random.default_rng(7)
    draws = roulette_select([1.0, 2.0, 3.0, 4.0], 40_000, rng)
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    assert set(roulette_select([0.0, 0.0], 100, rng)) == {0, 1}  # all zero: uniform


def test_crossover_swaps_tails_at_a_word_boundary_and_keeps_protected_spans() -> None:
    text = 'Did the "Blue Train" leave the station at 9:45 on the first day?'
    slots = segment(text)
    original = words_of(slots)
    first = tuple(w.upper() for w in original)
    second = tuple(f"{w}-x" for w in original)
    for seed in range(30):
        child_a, child_b = crossover(first, second, np.random.default_rng(seed))
        h = next(i for i, (a, f) in enumerate(zip(child_a, first, strict=True)) if a != f)
        assert 1 <= h <= len(original) - 1
        assert child_a == first[:h] + second[h:]
        assert child_b == second[:h] + first[h:]
        for child in (child_a, child_b):
            rendered = render(slots, child)
            assert '"Blue Train"' in rendered and "9:45" in rendered


def test_crossover_of_one_word_returns_the_parents() -> None:
    assert crossover(("a",), ("b",), np.random.default_rng(0)) == (("a",), ("b",))


def test_mutation_changes_exactly_one_key_position() -> None:
    original = ("w0", "w1", "w2", "w3", "w4")
    subs = {1: ("s1", "t1", ""), 3: ("s3", "")}
    for seed in range(50):
        rng = np.random.default_rng(seed)
        individual = mutate(original, subs, rng)
        mutant = mutate(individual, subs, rng)
        changed = [i for i, (a, b) in enumerate(zip(individual, mutant, strict=True)) if a != b]
        assert len(changed) == 1 and changed[0] in subs
        assert mutant[changed[0]] in subs[changed[0]]


def test_mutation_without_alternatives_leaves_the_individual() -> None:
    assert mutate(("a", ""), {1: ("",)}, np.random.default_rng(0)) == ("a", "")


def test_fidelity_is_the_shifted_cosine() -> None:
    x0 = np.array([1.0, 0.0])
    variants = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert fidelity(x0, variants).tolist() == [1.0, 0.5, 0.0]
    assert fidelity(x0, variants, "abs_cosine").tolist() == [1.0, 0.0, 1.0]


def test_drawing_spreads_over_generations_and_pads_only_when_short() -> None:
    populations = [[f"g{g}-{i}" for i in range(4)] for g in range(5)]
    drawn, n_real = draw_across_generations(populations, 6, 2, np.random.default_rng(0))
    assert n_real == 6 and len(set(drawn)) == 6
    generations = {item.split("-")[0] for item in drawn}
    assert generations == {"g0", "g2", "g4"}  # generations 0, τ, 2τ with τ = 2

    small = [["a"], ["a", "b"]]
    drawn, n_real = draw_across_generations(small, 5, 2, np.random.default_rng(0))
    assert n_real == 2 and len(drawn) == 5 and set(drawn) == {"a", "b"}
    drawn, n_real = draw_across_generations(small, 5, 2, np.random.default_rng(0), pad=False)
    assert (drawn, n_real) == (["a", "b"], 2)


# -- whole runs -------------------------------------------------------------------------------


async def test_a_run_makes_m_distinct_on_topic_variants(embedder) -> None:
    run, found = await gaap(embedder).run(NQ_QUESTION, 9)
    assert found is not None and found.lexicon == "user"
    assert run.n_real == 9 and len(set(run.prompts)) == 9
    assert NQ_QUESTION not in run.prompts
    assert all(run.fitness[p] >= 0.5 for p in run.prompts)
    assert run.stop_reason in ("max_generations", "delta")
    assert len(run.generations) <= 1 + 8


async def test_same_seed_same_variants_other_seed_other_variants(embedder) -> None:
    first = await gaap(embedder, seed=3).perturb(NQ_QUESTION, 6)
    again = await gaap(embedder, seed=3).perturb(NQ_QUESTION, 6)
    other = await gaap(embedder, seed=4).perturb(NQ_QUESTION, 6)
    assert first.prompts == again.prompts
    assert first.prompts != other.prompts


class CountingEmbedder:
    """The real embedder, counting the texts it is asked for."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.texts = 0

    def encode(self, texts):
        self.texts += len(texts)
        return self.inner.encode(texts)


async def test_a_prompt_asked_again_is_answered_from_the_kept_result(embedder) -> None:
    counting = CountingEmbedder(embedder)
    perturber = gaap(counting)
    first = await perturber.perturb(NQ_QUESTION, 6)
    spent = counting.texts
    first.prompts.pop()  # the guard trims what it gets: the kept result must not change

    again = await perturber.perturb(NQ_QUESTION, 6)

    assert spent > 0 and counting.texts == spent  # nothing embedded the second time
    assert again.prompts == (await gaap(embedder).perturb(NQ_QUESTION, 6)).prompts
    assert len(again.prompts) == 6 and again.n_real == first.n_real
    other = await perturber.perturb(NQ_QUESTION, 4)  # another m is another run
    assert counting.texts > spent and len(other.prompts) == 4
    uncached, before = gaap(counting, cache_size=0), counting.texts
    await uncached.perturb(NQ_QUESTION, 6)
    once = counting.texts - before
    await uncached.perturb(NQ_QUESTION, 6)
    assert counting.texts - before == 2 * once  # cache_size=0 runs every time


async def test_a_failed_lexicon_request_is_not_kept(embedder) -> None:
    from uq_guard.perturb.model_lexicon import ModelLexicon

    backend = FakeBackend()
    backend.fail(lambda request: True, RuntimeError("down"), times=1)
    perturber = GAAPPerturber(embedder, ModelLexicon(backend))

    failed = await perturber.perturb(NQ_QUESTION, 4)
    retried = await perturber.perturb(NQ_QUESTION, 4)

    assert any("lexicon request failed" in r for r in failed.degraded_reasons)
    assert not any("lexicon request failed" in r for r in retried.degraded_reasons)
    assert len(backend.requests) == 2
    kept = await perturber.perturb(NQ_QUESTION, 4)
    assert len(backend.requests) == 2 and kept.usage.model_calls == 0
    assert retried.usage.model_calls == 1


async def test_delta_stops_the_run_and_max_generations_bounds_it(embedder) -> None:
    stopped, _ = await gaap(embedder, delta=1.0).run(NQ_QUESTION, 4)
    assert stopped.stop_reason == "delta" and len(stopped.generations) == 1
    bounded, _ = await gaap(embedder, delta=0.0, max_generations=3).run(NQ_QUESTION, 4)
    assert bounded.stop_reason == "max_generations" and len(bounded.generations) == 4


async def test_the_fidelity_floor_drops_drifting_variants(embedder) -> None:
    run, _ = await gaap(embedder, min_fidelity=0.99).run(NQ_QUESTION, 9)
    assert all(run.fitness[p] >= 0.99 for p in run.prompts)
    assert run.n_real < 9


async def test_protected_and_caller_marked_spans_never_change(embedder) -> None:
    prompt = 'when did "the last time" air on the moon channel in 1969'
    result = await gaap(embedder, protected=["moon channel"]).perturb(prompt, 8)
    assert result.prompts
    for variant in result.prompts:
        assert '"the last time"' in variant and "moon channel" in variant and "1969" in variant


@needs_wordnet
async def test_wordnet_gaap_is_model_free_and_reports_its_lexicon(embedder) -> None:
    result = await GAAPPerturber(embedder, WordNetLexicon()).perturb(QUESTION, 5)
    assert result.lexicon == "wordnet"
    assert result.usage.model_calls == 0
    assert result.n_real == 5 and len(result.prompts) == 5
    assert all("France" in p for p in result.prompts)


@pytest.mark.parametrize(
    ("name", "prompt"),
    [
        ("one word", "Photosynthesis"),
        ("only numbers", "3.14159 2.71828 1.41421"),
        ("emoji", "🙂🙂 what does 🚀 mean 🤔"),
        ("code", "```python\ndef f(x):\n    return x + 1\n```\nwhy does f(2) return 3"),
        ("non-English", "¿Cuál es la capital de Francia? 東京は日本の首都ですか"),
        ("multi-sentence", "I visited Rome last year. The food was great! Which city is next?"),
        ("empty-ish", "   "),
    ],
)
async def test_odd_prompts_do_not_crash(embedder, name: str, prompt: str) -> None:
    result = await gaap(embedder, lexicon=NoLexicon()).perturb(prompt, 5)
    assert all(isinstance(p, str) and p.strip() for p in result.prompts)
    assert result.real_count <= 5
    if result.real_count < 5:
        assert result.degraded_reasons  # a shortfall is always explained, as degradation


async def test_a_prompt_with_nothing_to_change_says_so(embedder) -> None:
    result = await gaap(embedder, frames=False).perturb("1 2 3 4", 5)
    assert result.prompts == [] and result.n_real == 0
    assert any("no word it may change" in reason for reason in result.degraded_reasons)


async def test_a_2000_word_prompt_is_capped_not_crashed(embedder) -> None:
    words = "the moon orbits earth while tides rise and fall along every coast".split()  # noqa: SIM905
    prompt = " ".join(words[i % len(words)] + f"{'' if i % 7 else '.'}" for i in range(2000))
    result = await gaap(embedder, max_generations=1, pairs_per_generation=1).perturb(prompt, 3)
    assert len(result.prompts) == 3
    assert all(len(p.split()) > 1500 for p in result.prompts)


# -- in the engine -------------------------------------------------------------------------------


async def test_guard_with_gaap_makes_no_perturbation_model_call(embedder) -> None:
    backend = FakeBackend("Paris is the capital of France.")
    guard = Guard(
        backend,
        embedder=embedder,
        n_perturbations=3,
        n_samples=2,
        gaap_lexicon="user",
        gaap_substitutions=USER_WORDS,
        retry_wait_s=0.0,
    )
    assert guard.config.perturbation == "gaap"  # the default

    report = (await guard.arun(QUESTION)).report

    assert backend.requests_of("paraphrase") == []
    assert backend.calls == 1 + 4  # the reply, then x_0 and three variants
    assert report.perturbation_method == "gaap"
    assert report.perturbation_lexicon == "user"
    assert report.n_perturbations_real == 3 and len(report.perturbations) == 3
    assert report.cost.model_calls == 5
    assert not report.degraded
    assert report.model_dump(mode="json")["perturbation_lexicon"] == "user"


async def test_gaap_perturbs_only_the_last_user_message(embedder) -> None:
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": QUESTION},
    ]
    backend = FakeBackend("Paris.")
    guard = Guard(
        backend,
        embedder=embedder,
        n_perturbations=2,
        n_samples=2,
        gaap_lexicon="user",
        gaap_substitutions=USER_WORDS,
    )
    await guard.arun(conversation)
    samples = backend.requests_of("sample")
    assert len(samples) == 3
    for request in samples:
        assert list(request.messages[:3]) == conversation[:3]
    assert {prompt_of(r) for r in samples[1:]}.isdisjoint({QUESTION})


async def test_gaap_plus_paraphrase_mixes_both(embedder) -> None:
    paraphrases = ["Which city is the capital of France?", "Name the capital city of France."]
    backend = FakeBackend("Paris.", paraphrases=paraphrases)
    guard = Guard(
        backend,
        embedder=embedder,
        perturbation="gaap+paraphrase",
        n_perturbations=4,
        n_samples=2,
        gaap_lexicon="user",
        gaap_substitutions=USER_WORDS,
    )
    report = (await guard.arun(QUESTION)).report
    assert report.perturbation_method == "gaap+paraphrase"
    assert len(backend.requests_of("paraphrase")) == 1
    assert report.perturbations[2:] == paraphrases
    assert report.n_perturbations_real == 4 and report.perturbation_lexicon == "user"


@needs_wordnet
async def test_fewer_crossovers_a_generation_embed_fewer_prompts(embedder) -> None:
    spent = {}
    for pairs in (4, 2):  # 2, the default
        counting = CountingEmbedder(embedder)
        guard = Guard(
            FakeBackend("Paris."),
            embedder=counting,
            n_perturbations=4,
            n_samples=1,
            gaap_lexicon="wordnet",
            gaap_pairs_per_generation=pairs,
        )
        report = (await guard.arun(NQ_QUESTION)).report
        assert report.n_perturbations_real == 4
        spent[pairs] = counting.texts
    assert spent[2] < spent[4]


def test_crossovers_a_generation_are_a_positive_count() -> None:
    from uq_guard import ConfigurationError, GuardConfig

    with pytest.raises(ConfigurationError, match="gaap_pairs_per_generation"):
        GuardConfig(gaap_pairs_per_generation=0)
