"""Chat messages: which text is guarded, and what every perturbed request carries."""

from __future__ import annotations

import copy

import pytest

from tests.unit.fake_backend import FakeBackend, prompt_of
from uq_guard import ConfigurationError, Guard
from uq_guard._messages import (
    content_text,
    normalize_messages,
    user_prompt,
    with_user_prompt,
)
from uq_guard.embeddings import SentenceTransformerEmbedder, shared_embedder

PARAPHRASES = ["Which city is the capital of France?", "Name the capital city of France."]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

CONVERSATION = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return shared_embedder()


def guarded(backend: FakeBackend, embedder) -> Guard:
    return Guard(
        backend,
        embedder=embedder,
        n_perturbations=2,
        n_samples=2,
        retry_wait_s=0.0,
        perturbation="paraphrase",  # the paraphrases are scripted
    )


# -- normalize_messages -------------------------------------------------------


def test_a_string_prompt_becomes_one_user_message() -> None:
    assert normalize_messages("Hi there") == ({"role": "user", "content": "Hi there"},)


def test_a_list_of_messages_is_kept_as_it_is() -> None:
    assert normalize_messages(CONVERSATION) == tuple(CONVERSATION)


def test_an_empty_list_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        normalize_messages([])


def test_no_user_message_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no user message"):
        normalize_messages(
            [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello!"}]
        )


@pytest.mark.parametrize("bad", [["hello"], [{"content": "no role"}], [None]])
def test_a_malformed_message_is_a_configuration_error_naming_its_index(bad) -> None:
    with pytest.raises(ConfigurationError, match=r"messages\[0\]"):
        normalize_messages(bad)


# -- the guarded prompt -------------------------------------------------------


def test_the_prompt_is_the_last_user_message() -> None:
    assert user_prompt(CONVERSATION) == "What is the capital of France?"


def test_a_human_role_counts_as_the_user() -> None:
    assert user_prompt([{"role": "human", "content": "Hello?"}]) == "Hello?"


def test_the_text_of_a_multimodal_content_leaves_out_non_text_parts() -> None:
    content = [{"type": "text", "text": "Describe"}, IMAGE, {"type": "text", "text": "briefly."}]

    assert content_text(content) == "Describe\nbriefly."
    assert content_text(None) == ""


def test_replacing_the_prompt_keeps_every_other_turn_untouched() -> None:
    before = copy.deepcopy(CONVERSATION)

    replaced = with_user_prompt(CONVERSATION, "Name the capital city of France.")

    assert list(replaced[:3]) == CONVERSATION[:3]
    assert replaced[3] == {"role": "user", "content": "Name the capital city of France."}
    assert before == CONVERSATION  # the caller's list is not mutated


def test_replacing_the_prompt_keeps_other_keys_of_the_message() -> None:
    messages = [{"role": "user", "content": "Hi", "name": "alice"}]

    assert with_user_prompt(messages, "Hello")[0] == {
        "role": "user",
        "content": "Hello",
        "name": "alice",
    }


def test_replacing_a_multimodal_prompt_keeps_the_image() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}]

    [replaced] = with_user_prompt(messages, "What does this show?")

    assert IMAGE in replaced["content"]
    assert content_text(replaced["content"]) == "What does this show?"
    assert messages[0]["content"] == [{"type": "text", "text": "What is this?"}, IMAGE]


# -- through the Guard ----------------------------------------------------------


async def test_every_request_of_a_conversation_keeps_the_earlier_turns(embedder) -> None:
    backend = FakeBackend("Paris is the capital of France.", paraphrases=PARAPHRASES)

    await guarded(backend, embedder).arun(CONVERSATION)

    [reply] = backend.requests_of("reply")
    assert list(reply.messages) == CONVERSATION
    samples = backend.requests_of("sample")
    assert [prompt_of(r) for r in samples] == ["What is the capital of France?", *PARAPHRASES]
    for sample in samples:
        assert list(sample.messages[:3]) == CONVERSATION[:3]
        assert len(sample.messages) == len(CONVERSATION)
    # the paraphrase request is about the last user message only
    [paraphrase] = backend.requests_of("paraphrase")
    assert "What is the capital of France?" in prompt_of(paraphrase)
    assert "Italy" not in prompt_of(paraphrase)


async def test_a_multimodal_prompt_keeps_its_image_in_every_request(embedder) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is the capital of France?"}, IMAGE],
        }
    ]
    backend = FakeBackend("Paris is the capital of France.", paraphrases=PARAPHRASES)

    result = await guarded(backend, embedder).arun(messages)

    assert result.report.n_prompts == 3
    samples = backend.requests_of("sample")
    assert len(samples) == 3
    for sample in samples:
        assert IMAGE in sample.messages[-1]["content"]


async def test_guarding_a_conversation_without_a_user_turn_is_refused(embedder) -> None:
    backend = FakeBackend()

    with pytest.raises(ConfigurationError):
        await guarded(backend, embedder).arun([{"role": "system", "content": "Be brief."}])
    with pytest.raises(ConfigurationError):
        await guarded(backend, embedder).arun([])

    assert backend.calls == 0
