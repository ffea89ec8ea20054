"""Loading a local chat model's weights and tokenizer, and the lock that serialises their use.

:func:`load_chat_model` reads a folder, a hub name or a GGUF file with
transformers and readies it for batched generation (left padding, a pad
token, a chat template). :class:`ModelRuntime` holds what was loaded with
the lock that lets one ``generate`` run at a time; a chat model and its
copies share one runtime, as the weights are a resource, not data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uq_guard._exceptions import ConfigurationError, MissingDependencyError
from uq_guard.embeddings import pick_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "SUPPORTED_DTYPES",
    "ModelRuntime",
    "dtype_name",
    "load_chat_model",
    "resolve_device_and_dtype",
]

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")


def dtype_name(dtype: Any) -> str:
    """``"float16"`` for ``"float16"``, ``"torch.float16"`` and ``torch.float16`` alike."""
    return str(dtype).removeprefix("torch.")


def resolve_device_and_dtype(device: Any, dtype: Any) -> tuple[str, str]:
    """The device (cuda, then mps, then cpu when None) and the dtype's name.

    A dtype left None is float16 on cuda and float32 elsewhere.
    """
    device = pick_device() if device is None else str(device)
    if dtype is None:
        return device, "float16" if device.startswith("cuda") else "float32"
    return device, dtype_name(dtype)


def load_chat_model(
    model_name: str, *, gguf_file: str | None, device: str, dtype: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, on ``device``, in eval mode, padding on the left.

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        ConfigurationError: the model has no chat template.
        OSError: the weights or tokenizer could not be found.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("local models", "local") from exc

    started = time.perf_counter()
    load_options: dict[str, Any] = {}
    if gguf_file is not None:
        load_options["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(model_name, **load_options)
    model = AutoModelForCausalLM.from_pretrained(
        model_name, dtype=getattr(torch, dtype), **load_options
    )
    if gguf_file is not None:
        # The GGUF weights are dequantised on load; drop the quantiser so
        # moving the model between devices is allowed.
        model.hf_quantizer = None
    model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigurationError(
            f"{model_name} has no chat template; HuggingFaceChatModel needs a chat model"
        )
    logger.info(
        "loaded %s on %s (%s) in %.2f s", model_name, device, dtype, time.perf_counter() - started
    )
    return model, tokenizer


class ModelRuntime:
    """The loaded model (torch weights, or a llama.cpp decoder), its tokenizer, and the lock
    that serialises their use.

    Shared, never copied, by ``model_copy`` and ``deepcopy`` of the chat model:
    the weights are a resource, not data.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model: Any = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.loaded_from: tuple[Any, ...] | None = None

    def __copy__(self) -> ModelRuntime:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelRuntime:
        return self

    def load_locked(
        self, wanted: tuple[Any, ...], load: Callable[[], tuple[Any, PreTrainedTokenizerBase]]
    ) -> tuple[Any, PreTrainedTokenizerBase]:
        """The model and tokenizer, loaded by ``load`` unless they are; the caller holds
        :attr:`lock`. ``wanted``: the fields the weights come from.

        Raises:
            ConfigurationError: the runtime already holds other weights (a
                ``model_copy`` with other fields).
        """
        if self.model is not None and self.tokenizer is not None:
            if self.loaded_from == wanted:
                return self.model, self.tokenizer
            raise ConfigurationError(
                f"this model was loaded from {self.loaded_from}, but its fields now say "
                f"{wanted}; model_copy shares the loaded weights, so build a new model "
                "to change the fields they come from"
            )
        model, tokenizer = load()
        self.model, self.tokenizer, self.loaded_from = model, tokenizer, wanted
        return model, tokenizer
