"""uq_guard_hf: a local Hugging Face chat model for uq_guard and LangChain.

:class:`HuggingFaceChatModel` is a LangChain ``BaseChatModel`` and a uq_guard
``Backend`` at once: it answers ``invoke`` like any chat model, and answers
the engine's rounds of sampling in batched, left-padded ``generate`` calls
with token log-probabilities and entropies from the raw logits.

>>> from uq_guard_hf import HuggingFaceChatModel
>>> model = HuggingFaceChatModel.default()   # SmolLM2-135M-Instruct, provisioned once

Needs the ``local`` extra: ``pip install 'uq-guard[local]'``.
"""

from uq_guard_hf.chat_model import HuggingFaceChatModel
from uq_guard_hf.provision import default_model_path, provision_default_model

__all__ = ["HuggingFaceChatModel", "default_model_path", "provision_default_model"]
