"""A quantised GGUF file rewritten with float16 or float32 weights, for llama.cpp.

transformers dequantises a quantised GGUF (SmolLM2's Q4_1) and computes in
float32 (float16 on CUDA). llama.cpp computing on the quantised weights gives
other numbers: per-token entropies up to about 0.4 nats away, and a
different greedy reply to most questions (it quantises the activations too),
while the shipped calibration reads those entropies. On the same weights
written out as float32 it agrees with transformers to about 0.02 nats, and as
float16 to about 0.03, measured in
``benchmarks/results/performance/local_generation.md``. float16 halves what
each decoded token reads, so a single reply decodes about 1.7 times faster.

The dequantisation is ``gguf``'s own (:func:`gguf.quants.dequantize`), the
one transformers uses, so both runtimes start from the very same numbers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

__all__ = ["GGUF_FILE_TYPES", "write_dequantised_gguf"]

logger = logging.getLogger(__name__)

GGUF_FILE_TYPES = {"float32": 0, "float16": 1}
"""``general.file_type`` of a GGUF whose weights are all float32 / mostly float16."""


def write_dequantised_gguf(
    source: str | Path,
    destination: str | Path,
    dtype: Literal["float16", "float32"] = "float16",
) -> None:
    """Write ``source``'s metadata and its tensors, dequantised, to ``destination``.

    Quantised tensors become ``dtype``; tensors already float32 (the norms,
    which llama.cpp wants in float32) stay so.

    Raises:
        ImportError: the ``gguf`` package is not installed (the ``local`` extra).
        ValueError: another ``dtype``.
        OSError: a file could not be read or written.
    """
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    if dtype not in GGUF_FILE_TYPES:
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    started = time.perf_counter()
    reader = GGUFReader(str(source))
    architecture = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(destination), architecture)
    for name, entry in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        if name == "general.file_type":
            writer.add_uint32(name, GGUF_FILE_TYPES[dtype])
            continue
        value_type = entry.types[0]
        sub_type = entry.types[1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, entry.contents(), value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        shape = [int(size) for size in reversed(tensor.shape.tolist())]
        values = dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        if dtype == "float16" and tensor.tensor_type != GGMLQuantizationType.F32:
            values = values.astype(np.float16)
        writer.add_tensor(tensor.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info(
        "wrote %s (%s) in %.1f s", Path(destination).name, dtype, time.perf_counter() - started
    )
