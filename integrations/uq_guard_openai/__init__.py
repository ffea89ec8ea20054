"""OpenAI integration: ``wrap_openai`` guards an ``OpenAI`` / ``AsyncOpenAI`` client.

>>> from openai import OpenAI
>>> from uq_guard_openai import wrap_openai
>>> client = wrap_openai(OpenAI(), policy="annotate")
>>> resp = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
>>> resp.uncertainty.confidence          # also resp.model_extra["uncertainty"]
>>> for chunk in client.chat.completions.create(..., stream=True):
...     print(chunk.choices[0].delta.content if chunk.choices else "", end="")
>>> chunk.uncertainty                     # the report rides on the finishing chunk

Needs the ``openai`` extra: ``pip install 'uq-guard[openai]'``.
"""

from uq_guard._exceptions import UncertaintyAbstention
from uq_guard_openai.backend import (
    Endpoint,
    MalformedResponseError,
    OpenAIBackend,
    ServerCapabilities,
)
from uq_guard_openai.client import wrap_openai
from uq_guard_openai.completion import (
    REPORT_FIELD,
    SETTINGS_KEY,
    build_guard,
    complete,
    completion_from_result,
    guarded_completion,
)
from uq_guard_openai.stream import AsyncGuardedStream, GuardedStream, completion_chunks

__all__ = [
    "REPORT_FIELD",
    "SETTINGS_KEY",
    "AsyncGuardedStream",
    "Endpoint",
    "GuardedStream",
    "MalformedResponseError",
    "OpenAIBackend",
    "ServerCapabilities",
    "UncertaintyAbstention",
    "build_guard",
    "complete",
    "completion_chunks",
    "completion_from_result",
    "guarded_completion",
    "wrap_openai",
]
