"""Which engine the default local model runs on, and llama.cpp's answers shaped as transformers'.

No model is loaded here: the selection rule is a pure function, ``default()``
is checked with both constructors replaced, and the answer shaping runs on a
scripted decoder and tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import uq_guard_hf.chat_model as chat_model_module
import uq_guard_hf.local_engine as engine_module
import uq_guard_hf.provision as provision_module
from uq_guard_hf import HuggingFaceChatModel, LlamaCppChatModel
from uq_guard_hf.batched_generation import SamplingSettings
from uq_guard_hf.llama_cpp_chat_model import generate_llama_cpp_batch
from uq_guard_hf.llama_cpp_decoding import DecodedSequence, LlamaCppDecoder
from uq_guard_hf.local_engine import ENGINE_ENV, pick_local_engine, requested_engine

from uq_guard._exceptions import ConfigurationError, MissingDependencyError

# -- the rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "device", "dtype", "installed", "expected"),
    [
        ("auto", "cpu", "float32", True, "llama_cpp"),
        ("auto", "cpu", None, True, "llama_cpp"),
        ("auto", "cpu", "float16", True, "llama_cpp"),
        ("auto", "cuda", "float16", True, "transformers"),
        ("auto", "cuda:1", "float32", True, "transformers"),
        ("auto", "mps", "float32", True, "transformers"),
        ("auto", "cpu", "bfloat16", True, "transformers"),
        ("auto", "cpu", "float32", False, "transformers"),
        ("transformers", "cpu", "float32", True, "transformers"),
        ("llama_cpp", "cpu", "float32", True, "llama_cpp"),
    ],
)
def test_pick_local_engine(
    engine: str, device: str, dtype: str | None, installed: bool, expected: str
) -> None:
    assert (
        pick_local_engine(engine, device=device, dtype=dtype, llama_cpp_installed=installed)
        == expected
    )


def test_a_missing_llama_cpp_is_a_log_line_under_auto(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=engine_module.__name__):
        chosen = pick_local_engine("auto", device="cpu", dtype=None, llama_cpp_installed=False)
    assert chosen == "transformers"
    assert "llama-cpp-python is not installed" in caplog.text


def test_asking_for_llama_cpp_explicitly_fails_loudly() -> None:
    with pytest.raises(MissingDependencyError):
        pick_local_engine("llama_cpp", device="cpu", dtype=None, llama_cpp_installed=False)
    with pytest.raises(ConfigurationError, match="CPU"):
        pick_local_engine("llama_cpp", device="cuda", dtype=None, llama_cpp_installed=True)
    with pytest.raises(ConfigurationError, match="engine must be one of"):
        pick_local_engine("vllm", device="cpu", dtype=None, llama_cpp_installed=True)


def test_the_environment_chooses_when_the_code_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert requested_engine(None) == "auto"
    monkeypatch.setenv(ENGINE_ENV, "transformers")
    assert requested_engine(None) == "transformers"
    assert requested_engine("llama_cpp") == "llama_cpp"


# -- default() follows it -----------------------------------------------------


@pytest.fixture
def constructors(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Both constructors replaced by recorders; returns what was called, in order."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def from_pretrained(cls: type, path: Any, **kwargs: Any) -> str:
        calls.append(("transformers", kwargs))
        return "transformers model"

    def llama_default(cls: type, **kwargs: Any) -> str:
        calls.append(("llama_cpp", kwargs))
        return "llama.cpp model"

    monkeypatch.setattr(HuggingFaceChatModel, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(LlamaCppChatModel, "default", classmethod(llama_default))
    monkeypatch.setattr(provision_module, "default_model_path", lambda: "/models/smollm2")
    monkeypatch.setattr(engine_module, "llama_cpp_available", lambda: True)
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    return calls


def test_default_runs_on_llama_cpp_on_the_cpu(constructors: list[Any]) -> None:
    assert HuggingFaceChatModel.default(device="cpu", seed=3) == "llama.cpp model"
    [(engine, kwargs)] = constructors
    assert engine == "llama_cpp"
    assert kwargs["seed"] == 3 and "calibration" in kwargs["guard_defaults"]


def test_default_keeps_transformers_on_cuda(constructors: list[Any]) -> None:
    assert HuggingFaceChatModel.default(device="cuda") == "transformers model"
    assert [engine for engine, _ in constructors] == ["transformers"]


def test_default_without_llama_cpp_uses_transformers(
    constructors: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "llama_cpp_available", lambda: False)
    assert HuggingFaceChatModel.default(device="cpu") == "transformers model"


def test_default_falls_back_when_llama_cpp_cannot_start(
    constructors: list[Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(cls: type, **kwargs: Any) -> None:
        raise OSError("no such file")

    monkeypatch.setattr(LlamaCppChatModel, "default", classmethod(broken))
    with caplog.at_level(logging.WARNING, logger=chat_model_module.__name__):
        assert HuggingFaceChatModel.default(device="cpu") == "transformers model"
    assert "could not start" in caplog.text
    with pytest.raises(OSError):
        HuggingFaceChatModel.default(device="cpu", engine="llama_cpp")


def test_default_obeys_an_explicit_engine(
    constructors: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HuggingFaceChatModel.default(device="cpu", engine="transformers") == (
        "transformers model"
    )
    monkeypatch.setenv(ENGINE_ENV, "transformers")
    assert HuggingFaceChatModel.default(device="cpu") == "transformers model"


@pytest.mark.parametrize(("dtype", "expected"), [(None, "float16"), ("float32", "float32")])
def test_the_llama_cpp_default_reads_float16_weights_unless_asked(
    monkeypatch: pytest.MonkeyPatch, dtype: str | None, expected: str
) -> None:
    loaded: list[tuple[Any, dict[str, Any]]] = []

    def from_gguf(cls: type, path: Any, **kwargs: Any) -> str:
        loaded.append((path, kwargs))
        return "llama.cpp model"

    monkeypatch.setattr(LlamaCppChatModel, "from_gguf", classmethod(from_gguf))
    monkeypatch.setattr(provision_module, "default_model_path", lambda: "/models/smollm2")
    monkeypatch.setattr(
        provision_module, "smollm2_dequantised_gguf_path", lambda dtype: f"/gguf/{dtype}.gguf"
    )
    options = {} if dtype is None else {"dtype": dtype}
    assert LlamaCppChatModel.default(engine="auto", **options) == "llama.cpp model"
    [(path, kwargs)] = loaded
    assert path == f"/gguf/{expected}.gguf" and kwargs["dtype"] == expected
    assert kwargs["tokenizer"] == "/models/smollm2" and "engine" not in kwargs


def test_llama_cpp_model_refuses_a_gpu() -> None:
    with pytest.raises(ValueError, match="runs on the CPU"):
        LlamaCppChatModel(model_name="m", gguf_path="m.gguf", device="cuda")


# -- answers shaped as transformers' --------------------------------------------

EOS = 2


class ScriptedTokenizer:
    eos_token_id = EOS
    pad_token_id = EOS

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f" w{token}" for token in token_ids if token != EOS)


class ScriptedDecoder:
    """Returns, per prompt, the scripted token ids of each sample."""

    def __init__(self, script: list[list[list[int]]]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []

    def is_end_of_generation(self, token_id: int) -> bool:
        return token_id == EOS

    def decode(self, prompts: Sequence[Sequence[int]], **options: Any) -> list[Any]:
        self.calls.append(options)
        stats = options["want_statistics"]
        return [
            [
                DecodedSequence(
                    token_ids=list(ids),
                    token_logprobs=[-0.5] * len(ids) if stats else None,
                    token_entropies=[1.0] * len(ids) if stats else None,
                )
                for ids in self.script[index][: options["n"]]
            ]
            for index in range(len(prompts))
        ]


def test_sampled_answers_end_at_the_end_token_which_counts_as_spent() -> None:
    decoder = ScriptedDecoder([[[5, 6, EOS], [7, 8, 9]]])
    settings = SamplingSettings(temperature=0.7, max_new_tokens=3, n=2, want_logprobs=True)
    [answers], [spent] = generate_llama_cpp_batch(
        decoder,  # type: ignore[arg-type]
        ScriptedTokenizer(),  # type: ignore[arg-type]
        settings,
        [[1, 1]],
    )
    assert [a.text for a in answers] == ["w5 w6", "w7 w8 w9"]
    assert [a.finish_reason for a in answers] == ["stop", "length"]
    assert answers[0].token_ids == [5, 6] and answers[0].token_entropies == [1.0, 1.0]
    assert spent == 3 + 3
    assert decoder.calls[0]["temperature"] == 0.7 and decoder.calls[0]["n"] == 2


def test_greedy_answers_are_decoded_once_and_copied() -> None:
    decoder = ScriptedDecoder([[[4, EOS]]])
    settings = SamplingSettings(temperature=None, max_new_tokens=8, n=3, want_logprobs=False)
    [answers], [spent] = generate_llama_cpp_batch(
        decoder,  # type: ignore[arg-type]
        ScriptedTokenizer(),  # type: ignore[arg-type]
        settings,
        [[1]],
    )
    assert decoder.calls[0]["n"] == 1
    assert [a.text for a in answers] == ["w4"] * 3
    assert answers[0] is not answers[1] and answers[0].token_logprobs is None
    assert spent == 2


def test_stop_strings_cut_the_answer_and_its_statistics() -> None:
    decoder = ScriptedDecoder([[[5, 6, 7]]])
    settings = SamplingSettings(temperature=None, max_new_tokens=3, n=1, want_logprobs=True)
    [[answer]], _ = generate_llama_cpp_batch(
        decoder,  # type: ignore[arg-type]
        ScriptedTokenizer(),  # type: ignore[arg-type]
        settings,
        [[1]],
        stop=[" w7"],
    )
    assert answer.text == "w5 w6" and answer.finish_reason == "stop"
    assert len(answer.token_ids) == len(answer.token_entropies or []) == 2
    assert decoder.calls[0]["should_stop"] is not None


def test_seeded_sampling_draws_the_same_numbers() -> None:
    decoder = ScriptedDecoder([[[5]]])
    settings = SamplingSettings(temperature=1.0, max_new_tokens=1, n=1, want_logprobs=False)
    for _ in range(2):
        generate_llama_cpp_batch(decoder, ScriptedTokenizer(), settings, [[1]], seed=7)  # type: ignore[arg-type]
    first, second = (call["rng"].random() for call in decoder.calls)
    assert first == second


# -- packing sequences into passes ----------------------------------------------


def packer(n_ctx: int) -> LlamaCppDecoder:
    decoder = object.__new__(LlamaCppDecoder)
    decoder.n_ctx = n_ctx
    return decoder


def test_one_round_fits_one_pass() -> None:
    prompts = [[0] * 40] * 10
    passes = packer(8192)._passes(prompts, n=5, max_tokens=32)
    assert len(passes) == 1 and len(passes[0]) == 50


def test_passes_respect_the_sequence_cap_and_the_cache() -> None:
    prompts = [[0] * 100] * 20
    passes = packer(8192)._passes(prompts, n=5, max_tokens=32)
    assert [len(p) for p in passes] == [64, 36]
    # each pass: the prompts it reads once, plus max_tokens per sequence
    tight = packer(300)._passes([[0] * 100] * 3, n=2, max_tokens=50)
    for members in tight:
        read = {index for index, _ in members}
        assert 100 * len(read) + 50 * len(members) <= 300
    assert sorted(pair for members in tight for pair in members) == [
        (i, s) for i in range(3) for s in range(2)
    ]


def test_choose_samples_by_temperature_and_reads_raw_statistics() -> None:
    from uq_guard_hf.llama_cpp_decoding import _choose

    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32))
    chosen, logprobs, entropies = _choose(logits, None, True, np.random.default_rng(0))
    assert chosen.tolist() == [0, 2]
    assert logprobs is not None and entropies is not None
    assert np.allclose(logprobs, np.log([0.7, 0.8]), atol=1e-6)
    expected = [-(p * np.log(p)).sum() for p in ([0.7, 0.2, 0.1], [0.1, 0.1, 0.8])]
    assert np.allclose(entropies, expected, atol=1e-6)
    rng = np.random.default_rng(0)
    draws = np.array([_choose(logits[:1], 1.0, False, rng)[0][0] for _ in range(4000)])
    assert abs((draws == 0).mean() - 0.7) < 0.03
