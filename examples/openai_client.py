"""Guard an OpenAI client: every chat completion comes back with an uncertainty report.

Runs against any OpenAI-compatible server. By default it starts a local
llama.cpp server with SmolLM2 (``llama-cpp-python[server]``, installed by
``make setup``); point it elsewhere with ``--base-url`` (the key is read from
``OPENAI_API_KEY``)::

    .venv/bin/python examples/openai_client.py
    .venv/bin/python examples/openai_client.py \
        --base-url https://api.openai.com/v1 --model gpt-4o-mini
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
from uq_guard_openai import wrap_openai

QUESTIONS = ["What is the capital of Japan?", "What is 7 times 8?", "Who wrote Hamlet?"]


@contextlib.contextmanager
def local_llama_server(port: int = 8765) -> Iterator[str]:
    """A llama.cpp server with SmolLM2 on 127.0.0.1 while the block runs."""
    from uq_guard_hf.provision import smollm2_gguf_path

    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--verbose", "False",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def ask_all(base_url: str, model: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "none"))
    # the same as uq_guard.guard(client, ...)
    guarded = wrap_openai(
        client, policy="abstain", threshold=0.4, n_perturbations=4, n_samples=3, max_tokens=48
    )
    assert isinstance(guarded, openai.OpenAI)  # still an OpenAI client
    for question in QUESTIONS:
        resp = guarded.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            max_tokens=48,
            temperature=0,
        )
        report = resp.uncertainty  # also resp.model_extra["uncertainty"]
        print(f"Q: {question}")
        print(f"A: {resp.choices[0].message.content.strip()}")
        # None when no sample came back
        shown = "n/a" if report.confidence is None else f"{report.confidence:.2f}"
        print(
            f"   confidence {shown} ({report.method}), decision {report.decision}, "
            f"{report.cost.model_calls} calls, {report.timings_ms['total'] / 1000:.1f} s\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-url", help="an OpenAI-compatible /v1 URL (default: local llama.cpp)"
    )
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    if args.base_url:
        ask_all(args.base_url, args.model)
        return
    with local_llama_server() as url:
        ask_all(url, args.model)


if __name__ == "__main__":
    main()
