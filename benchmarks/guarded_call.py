"""One guarded chat turn at the default settings, against one plain call of the same model.

Against the controlled OpenAI-compatible upstream of ``tests/support/upstream.py``
(127.0.0.1, a fixed 300 ms per request, ``n`` ignored as llama.cpp's server
does, so a default call makes 1 + 50 requests), through both wrappers:

* ``wrap_openai(AsyncOpenAI(...))`` against the bare ``AsyncOpenAI`` client;
* ``GuardedChatModel(model=ChatOpenAI(...))`` (``ainvoke``) against the bare
  ``ChatOpenAI``.

Everything at its defaults: GAAP perturbation with WordNet, 10 prompts × 5
samples, the default embedder, every scorer. Every guarded call asks a new
NQ-Open question and the upstream's answers vary, so no cache makes a call
cheap. Calls are interleaved, ``--repeats`` times, in one run; medians.

Each wrapper twice: as shipped, where the reply and the original prompt's
samples go out while GAAP makes the perturbed prompts (the backends answer
requests independently), and with that overlap switched off (the reply
waits for GAAP, as a batching local model's round does), for comparison.
And twice again: a reply that takes as long as a sample (300 ms), and one
that takes longer (``--reply-seconds``), as a long answer does next to
samples capped at a few dozen tokens.

    .venv/bin/python benchmarks/guarded_call.py --out benchmarks/results/performance/guarded_call.md
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import zlib
from pathlib import Path

import openai
from _common import NQ_OPEN_DEV, emit
from langchain_openai import ChatOpenAI
from uq_guard_langchain import GuardedChatModel
from uq_guard_langchain.backend import LangChainBackend
from uq_guard_openai import wrap_openai
from uq_guard_openai.backend import CallScopedBackend

from uq_guard import GuardConfig, UncertaintyReport
from uq_guard.evaluation.records import load_questions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.upstream import MODEL, Reply, ScriptedUpstream, is_sample

DELAY_S = 0.3
ANSWERS = ("Paris", "London", "Vienna", "Rome", "the Seine", "1889", "Gustave Eiffel")


def varied_answer(body: dict) -> str:
    """An answer that depends on the request (so samples differ and are new to every cache)."""
    pick = zlib.crc32(repr(body).encode()) % len(ANSWERS)
    asked = body["messages"][-1]["content"]
    return f"As for '{asked}', I believe the answer is {ANSWERS[pick]}."


async def timed(call, *, overlap: bool = True) -> tuple[float, UncertaintyReport | None]:
    """Seconds of one call (a coroutine, not started yet) and its report.

    ``overlap=False`` makes the reply wait for GAAP, as a batching backend's does.
    """
    backends = (CallScopedBackend, LangChainBackend)
    for backend in backends:
        backend.independent_requests = overlap
    try:
        started = time.perf_counter()
        report = await call
        return time.perf_counter() - started, report
    finally:
        for backend in backends:
            backend.independent_requests = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="calls per row (median)")
    parser.add_argument("--data", type=Path, default=NQ_OPEN_DEV)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument(
        "--reply-seconds",
        type=float,
        nargs="+",
        default=[DELAY_S, 1.5],
        help="how long the upstream takes for the reply (samples: 0.3 s); one table row set each",
    )
    args = parser.parse_args()
    per_set = 6 * args.repeats + 2  # every guarded call a question no cache has seen
    found = load_questions(args.data, per_set * len(args.reply_seconds))
    questions = [item.question + "?" for item in found]
    rows = [
        row
        for number, reply_s in enumerate(args.reply_seconds)
        for row in asyncio.run(
            measure(questions[number * per_set : (number + 1) * per_set], args.repeats, reply_s)
        )
    ]

    config = GuardConfig()
    lines = [
        "# One guarded chat turn at the defaults against one plain call",
        "",
        "Produced by:",
        "",
        "```",
        " ".join(["benchmarks/guarded_call.py", *sys.argv[1:]]),
        "```",
        "",
        f"Upstream: {DELAY_S * 1000:.0f} ms a sample (a reply: `reply s`), `n` ignored (1 + "
        f"{config.n_perturbations + 1} × {config.n_samples} requests a guarded call). "
        f"Defaults: {config.perturbation} perturbation, max_concurrency "
        f"{config.max_concurrency}, embedding_backend {config.embedding_backend!r}. "
        f"Medians of {args.repeats} calls per row, interleaved, each guarded call a new "
        "NQ-Open question. `perturb`, `generate`, `score`: the report's own timings "
        "(medians, s).",
        "",
        "| reply s | wrapper | plain call s | guarded call s | × plain | perturb | generate "
        "| score |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    emit(lines, args.out)
    return 0


async def measure(questions: list[str], repeats: int, reply_s: float) -> list[str]:
    """One table row per wrapper and overlap setting, the upstream taking ``reply_s`` a reply."""
    upstream = ScriptedUpstream(varied_answer, honour_n=False, delay_s=DELAY_S)

    def slow_reply(body: dict, index: int) -> Reply | None:
        # a reply runs longer than a sample capped at a few dozen tokens
        return None if is_sample(body) else Reply(body=upstream.default_body(body), hang_s=reply_s)

    upstream.script = slow_reply
    with upstream:
        client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="none")
        guarded_client = wrap_openai(openai.AsyncOpenAI(base_url=upstream.base_url, api_key="none"))
        chat = ChatOpenAI(base_url=upstream.base_url, api_key="none", model=MODEL)
        guarded_chat = GuardedChatModel(
            model=ChatOpenAI(base_url=upstream.base_url, api_key="none", model=MODEL)
        )

        def messages(question: str) -> list[dict[str, str]]:
            return [{"role": "user", "content": question}]

        async def plain_openai(question: str) -> None:
            await client.chat.completions.create(model=MODEL, messages=messages(question))

        async def guarded_openai(question: str) -> UncertaintyReport:
            reply = await guarded_client.chat.completions.create(
                model=MODEL, messages=messages(question)
            )
            return reply.uncertainty

        async def plain_langchain(question: str) -> None:
            await chat.ainvoke(question)

        async def guarded_langchain(question: str) -> UncertaintyReport:
            message = await guarded_chat.ainvoke(question)
            return UncertaintyReport.model_validate(message.response_metadata["uq_guard"])

        pairs = {
            "wrap_openai (AsyncOpenAI)": (plain_openai, guarded_openai),
            "GuardedChatModel (ChatOpenAI, ainvoke)": (plain_langchain, guarded_langchain),
        }
        # warm-up: the embedder, WordNet, each wrapper's discovery of what n does
        for offset, (plain, guarded) in enumerate(pairs.values()):
            await plain(questions[offset])
            await guarded(questions[offset])
        variants = {"": True, " – reply waits for GAAP": False}
        plain_s: dict[str, list[float]] = {name: [] for name in pairs}
        runs: dict[str, list[tuple[float, UncertaintyReport]]] = {
            name + variant: [] for name in pairs for variant in variants
        }
        asked = iter(questions[len(pairs) :])
        for _ in range(repeats):
            for name, (plain, guarded) in pairs.items():
                plain_s[name].append((await timed(plain(next(asked))))[0])
                for variant, overlap in variants.items():
                    runs[name + variant].append(await timed(guarded(next(asked)), overlap=overlap))

    rows = []
    for label, found in runs.items():
        base = statistics.median(plain_s[label.split(" – ")[0]])
        guarded_s = statistics.median(seconds for seconds, _ in found)

        def part(key: str, found: list = found) -> str:
            values = [report.timings_ms.get(key, 0.0) for _, report in found]
            return f"{statistics.median(values) / 1000:.2f}"

        rows.append(
            f"| {reply_s:.1f} | {label} | {base:.2f} | {guarded_s:.2f} | {guarded_s / base:.1f}× "
            f"| {part('perturb')} | {part('generate')} | {part('score')} |"
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
