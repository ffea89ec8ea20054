"""``load_questions("hf:...")``: evaluation questions through the ``datasets`` library.

Every data set here is built with ``datasets`` in the test's temporary folder
and read back through the same ``hf:`` path a user types (``save_to_disk``
folders and folders of data files), never downloaded. The Hub paths (an
unreachable Hub, offline mode) run with sockets allowed only to 127.0.0.1,
so a slip cannot reach the network.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard.evaluation.records import load_questions

# the rows of the three known data sets, in the shape the Hub serves them
NQ_OPEN = {
    "question": ["who wrote the origin of species", "when did the titanic sink"],
    "answer": [["Charles Darwin"], ["15 April 1912", "1912"]],
}
TRIVIA_QA = {
    "question": ["What is the currency of Denmark?"],
    "question_id": ["tc_42"],
    "question_source": ["http://www.quizballs.com/"],
    "entity_pages": [{"doc_source": [], "filename": [], "title": [], "wiki_context": []}],
    "search_results": [
        {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        }
    ],
    "answer": [
        {
            "aliases": ["Danish krone", "DKK", "Kroner"],
            "normalized_aliases": ["danish krone", "dkk", "kroner"],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": "danish krone",
            "type": "WikipediaEntity",
            "value": "Danish krone",
        }
    ],
}
SCIQ = {
    "question": ["What type of organism is commonly used in preparation of foods such as yogurt?"],
    "distractor1": ["viruses"],
    "distractor2": ["protozoa"],
    "distractor3": ["gymnosperms"],
    "correct_answer": ["mesophilic organisms"],
    "support": ["Mesophiles grow best in moderate temperature ..."],
}


def saved(folder: Path, **splits: dict) -> str:
    """Save a DatasetDict of ``splits`` with ``save_to_disk``; the ``hf:`` path to it."""
    DatasetDict({name: Dataset.from_dict(rows) for name, rows in splits.items()}).save_to_disk(
        str(folder)
    )
    return f"hf:{folder}"


# -- the three known data sets --------------------------------------------------


def test_nq_open_reads_question_and_answer_list_from_its_validation_split(tmp_path) -> None:
    train = {"question": ["a training question"], "answer": [["x"]]}
    path = saved(tmp_path / "nq_open", train=train, validation=NQ_OPEN)

    items = load_questions(path)

    assert [item.question for item in items] == NQ_OPEN["question"]
    assert [item.gold for item in items] == NQ_OPEN["answer"]
    assert [item.id for item in items] == ["0", "1"]  # no id field: the row index
    assert [item.question for item in load_questions(f"{path}:train")] == train["question"]


def test_trivia_qa_reads_the_value_and_aliases_and_keeps_its_question_id(tmp_path) -> None:
    path = saved(tmp_path / "trivia_qa", validation=TRIVIA_QA, test={**TRIVIA_QA})

    [item] = load_questions(path)

    assert item.id == "tc_42"
    assert item.question == "What is the currency of Denmark?"
    # the value first, then the aliases; the lower-case normalized aliases add nothing
    assert item.gold == ["Danish krone", "DKK", "Kroner"]


def test_sciq_reads_the_correct_answer_and_never_a_distractor(tmp_path) -> None:
    path = saved(tmp_path / "sciq", train=SCIQ, test=SCIQ)

    [item] = load_questions(path)

    assert item.gold == ["mesophilic organisms"]


def test_a_single_saved_dataset_and_a_limit(tmp_path) -> None:
    rows = {"question": [f"q{i}" for i in range(10)], "answer": [f"a{i}" for i in range(10)]}
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "mine"))

    items = load_questions(f"hf:{tmp_path / 'mine'}", limit=3)

    assert [(item.id, item.question, item.gold) for item in items] == [
        ("0", "q0", ["a0"]),
        ("1", "q1", ["a1"]),
        ("2", "q2", ["a2"]),
    ]


def test_a_folder_of_data_files_loads_through_load_dataset(tmp_path, monkeypatch) -> None:
    import datasets

    # load_dataset caches what it builds; keep that cache in the test's folder
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "files"
    folder.mkdir()
    # one schema for every file: datasets reads a folder as one data set with splits
    Dataset.from_dict(NQ_OPEN).to_json(str(folder / "validation.jsonl"))
    Dataset.from_dict({"question": ["q"], "answer": [["a"]]}).to_json(str(folder / "test.jsonl"))

    assert load_questions(f"hf:{folder}:test")[0].gold == ["a"]
    assert load_questions(f"hf:{folder}:validation")[1].gold == ["15 April 1912", "1912"]


def test_a_folder_datasets_cannot_read_is_a_configuration_error(tmp_path, monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "files"
    folder.mkdir()
    Dataset.from_dict(SCIQ).to_json(str(folder / "test.jsonl"))
    Dataset.from_dict(NQ_OPEN).to_json(str(folder / "validation.jsonl"))

    with pytest.raises(ConfigurationError, match="datasets cannot read"):
        load_questions(f"hf:{folder}:test")


def test_a_jsonl_file_with_sciqs_field_reads_it_too(tmp_path) -> None:
    path = tmp_path / "sciq.jsonl"
    Dataset.from_dict(SCIQ).to_json(str(path))

    [item] = load_questions(path)

    assert item.gold == ["mesophilic organisms"]


# -- what a user gets wrong ------------------------------------------------------


def test_unknown_fields_name_the_fields_and_a_mapping_that_works(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "quiz"
    Dataset.from_dict({"prompt": ["2 + 2?"], "target": ["4"]}).save_to_disk(str(folder))

    with pytest.raises(ConfigurationError) as raised:
        load_questions(f"hf:{folder}")

    message = str(raised.value)
    assert "has the fields prompt, target" in message
    assert "--data questions.jsonl" in message
    # the mapping the message shows, with the user's field names filled in, does the job
    code = re.search(r'python -c "(.+?)" then', message).group(1)
    monkeypatch.chdir(tmp_path)
    exec(code.replace("YOUR_QUESTION_FIELD", "prompt").replace("YOUR_ANSWER_FIELD", "target"))
    [item] = load_questions(tmp_path / "questions.jsonl")
    assert (item.question, item.gold) == ("2 + 2?", ["4"])


def test_several_splits_and_no_known_default_ask_for_one(tmp_path) -> None:
    path = saved(tmp_path / "mine", dev=NQ_OPEN, eval=NQ_OPEN)

    with pytest.raises(ConfigurationError, match=r"splits are dev, eval \(pick one: hf:.*:SPLIT"):
        load_questions(path)
    with pytest.raises(ConfigurationError, match="no split 'test'; its splits are dev, eval"):
        load_questions(f"{path}:test")


def test_a_row_without_gold_answers_is_named(tmp_path) -> None:
    path = saved(tmp_path / "nq_open", validation={"question": ["q0", "q1"], "answer": [["a"], []]})

    with pytest.raises(ConfigurationError, match=r"row 1 of hf:.* no gold answer"):
        load_questions(path)


@pytest.mark.parametrize("spec", ["hf:", "hf::validation", "hf:nq_open:a:b:c", "hf:nq_open:"])
def test_a_malformed_hf_path_shows_the_accepted_forms(spec) -> None:
    with pytest.raises(ConfigurationError, match="expected hf:NAME, hf:NAME:SPLIT"):
        load_questions(spec)


def test_without_the_datasets_package_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)

    with pytest.raises(MissingDependencyError, match=r"pip install 'uq-guard\[datasets\]'"):
        load_questions("hf:nq_open")


# -- the Hub out of reach ---------------------------------------------------------


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_an_unreachable_hub_fails_fast_naming_the_local_alternative(monkeypatch) -> None:
    import huggingface_hub.constants

    # nothing listens on the discard port: the Hub is "down" without touching the network
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()

    with pytest.raises(ConfigurationError) as raised:
        load_questions("hf:nq_open")

    assert time.perf_counter() - started < 5.0  # datasets' own retries take ~25 s
    message = str(raised.value)
    assert "the Hugging Face Hub is not reachable (http://127.0.0.1:9" in message
    assert "--data path/to/file.jsonl" in message


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_offline_mode_without_a_cached_copy_names_the_local_alternative(
    tmp_path, monkeypatch
) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    started = time.perf_counter()

    with pytest.raises(ConfigurationError) as raised:
        load_questions("hf:uq-guard-tests/no-such-dataset:validation")

    assert time.perf_counter() - started < 5.0
    message = str(raised.value)
    assert "HF_HUB_OFFLINE is set and the data set is not in the local cache" in message
    assert "--data path/to/file.jsonl" in message
