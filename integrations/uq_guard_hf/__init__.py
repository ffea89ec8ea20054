"""uq_guard_hf: a local Hugging Face chat model for uq_guard and LangChain.

:class:`HuggingFaceChatModel` is a LangChain ``BaseChatModel`` and a uq_guard
``Backend`` at once: it answers ``invoke`` like any chat model, and answers
the engine's rounds of sampling in batched, left-padded ``generate`` calls
with token log-probabilities and entropies from the raw logits.

>>> from uq_guard_hf import HuggingFaceChatModel
>>> model = HuggingFaceChatModel.default()   # SmolLM2-135M-Instruct, provisioned once

On the CPU, with ``llama-cpp-python`` installed, ``default()`` returns a
:class:`LlamaCppChatModel`: the same model, its forward passes on llama.cpp.

Needs the ``local`` extra: ``pip install 'uq-guard[local]'``.

The modules, one job each: ``chat_model`` (the LangChain class),
``loading`` (weights, tokenizer and their lock), ``request_batching`` (a
round of requests, grouped by sampling settings), ``batched_generation``
(one padded ``generate``), ``llama_cpp_chat_model`` and ``llama_cpp_decoding``
(the same on llama.cpp, and when it is picked), ``gguf_dequantise`` (its
weights), ``logit_statistics``, ``chat_prompt`` (messages checked and
encoded), ``shipped_calibration`` and ``provision`` (the bundled SmolLM2 and
its calibration).
"""

from uq_guard_hf.chat_model import HuggingFaceChatModel
from uq_guard_hf.llama_cpp_chat_model import LlamaCppChatModel
from uq_guard_hf.provision import default_model_path, provision_default_model
from uq_guard_hf.shipped_calibration import DEFAULT_CALIBRATION, shipped_guard_defaults

__all__ = [
    "DEFAULT_CALIBRATION",
    "HuggingFaceChatModel",
    "LlamaCppChatModel",
    "default_model_path",
    "provision_default_model",
    "shipped_guard_defaults",
]
