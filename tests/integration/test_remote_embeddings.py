"""``embedding_model="openai:URL#model"`` against a real embedding server.

infinity (``infinity-emb``, installed by ``scripts/setup.sh`` into
``.venv-embeddings``) serves the bundled all-MiniLM-L6-v2 folder in fp32 on a
free port of 127.0.0.1, behind an API key, under ``/v1``. The server-backed
embedder must give the local fp32 torch embedder's vectors and every score
to 1e-4 (measured: about 1e-7), and a server that is down must degrade the
report, never lose the reply. A server that cannot start fails these tests,
naming the setup step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.serve import free_port, serving_process
from tests.unit.fake_backend import FakeBackend
from tests.unit.model_free_parts import FixedVariants
from uq_guard import Guard
from uq_guard.embeddings import SentenceTransformerEmbedder, resolve_model_location
from uq_guard.remote_embedding import API_KEY_ENV
from uq_guard.scoring.suite import score_samples

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INFINITY = ROOT / ".venv-embeddings" / "bin" / "infinity_emb"
SETUP = (
    "; `make setup` (scripts/setup.sh) installs infinity-emb into .venv-embeddings, "
    "the embedding server these tests run"
)
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
KEY = "test-embedding-key"
TOLERANCE = 1e-4

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Pride and Prejudice?",
    "What is 7 times 8?",
    "Which planet is known as the red planet?",
    "What is the boiling point of water at sea level in Celsius?",
    "Which element has the chemical symbol Fe?",
    "In what year did the Second World War end?",
    "What is the largest ocean on Earth?",
    "Who painted the Mona Lisa?",
]
ANSWERS = [
    ["Paris.", "Paris is the capital.", "It is Paris.", "Lyon.", "Paris, France."],
    ["Eight.", "8 legs.", "Spiders have eight legs.", "Six.", "Eight legs."],
    ["Jane Austen.", "Austen.", "Charlotte Bronte.", "Jane Austen wrote it.", "J. Austen"],
    ["56.", "54", "Fifty-six.", "7 x 8 = 56", "It is 56."],
    ["Mars.", "Mars is the red planet.", "Jupiter.", "The planet Mars.", "mars"],
    ["100 degrees.", "100 °C", "One hundred.", "212", "It boils at 100 C."],
    ["Iron.", "Fe is iron.", "Iron (Fe).", "Lead.", "iron"],
    ["1945.", "In 1945.", "1944", "The war ended in 1945.", "Nineteen forty-five."],
    ["The Pacific.", "Pacific Ocean.", "The Atlantic.", "Pacific", "It is the Pacific Ocean."],
    ["Leonardo da Vinci.", "Da Vinci.", "Michelangelo.", "Leonardo.", "Leonardo da Vinci did."],
]


@pytest.fixture(scope="module")
def embedding_server() -> Iterator[str]:
    """infinity serving the bundled MiniLM as ``sentence-transformers/all-MiniLM-L6-v2``.

    Yields its base URL (``http://127.0.0.1:P/v1``).
    """
    if not INFINITY.is_file():
        pytest.fail(f"{INFINITY.relative_to(ROOT)} is missing{SETUP}")
    port = free_port()
    command = [
        str(INFINITY), "v2",
        "--model-id", resolve_model_location(None), "--served-model-name", MODEL,
        "--engine", "torch", "--device", "cpu", "--dtype", "float32",
        "--no-bettertransformer", "--no-model-warmup", "--no-vector-disk-cache",
        "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1",
        "--api-key", KEY, "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "OMP_NUM_THREADS": "2",
    }
    url = f"http://127.0.0.1:{port}/v1"
    with serving_process(
        command,
        ready_url=f"{url}/models",
        headers={"Authorization": f"Bearer {KEY}"},
        env=env,
        name="infinity_emb",
        hint=SETUP,
        startup_timeout_s=180,
    ):
        yield url


@pytest.fixture
def remote_spec(embedding_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    return f"openai:{embedding_server}#{MODEL}"


@pytest.fixture(scope="module")
def local() -> SentenceTransformerEmbedder:
    """The reference: the bundled MiniLM in fp32 torch, texts not cut (as the server runs it)."""
    return SentenceTransformerEmbedder(device="cpu", backend="torch", max_tokens=None)


def test_the_server_gives_the_local_vectors(remote_spec, local):
    texts = [t for q, answers in zip(QUESTIONS, ANSWERS, strict=True) for t in [q, *answers]]
    texts += ["", "Ünïcödé text — with dashes", "word " * 300]  # empty, non-ASCII, cut at 256
    remote = SentenceTransformerEmbedder(remote_spec)
    got = remote.encode(texts)
    want = local.encode(texts)
    assert got.shape == want.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # 63 texts in requests of 32; the cache answers a second call without the server
    assert remote.model.requests_sent == 2
    remote.encode(texts[:10])
    assert remote.model.requests_sent == 2


def test_every_score_matches_the_local_embedder(remote_spec, local):
    remote = SentenceTransformerEmbedder(remote_spec)
    for similarity in ("answer_words", "shifted_cosine"):
        common = {
            "prompts": QUESTIONS,
            "answers": ANSWERS,
            "reply": "Paris is the capital of France.",
            "similarity": similarity,
            "n_bootstrap": 10,
        }
        want = score_samples(embedder=local, **common)
        got = score_samples(embedder=remote, **common)
        assert set(got.scores) == set(want.scores) and len(want.scores) > 5
        for name, value in want.scores.items():
            assert got.scores[name] == pytest.approx(value, abs=TOLERANCE), name
        assert got.confidence == pytest.approx(want.confidence, abs=TOLERANCE)


async def test_a_guard_configured_with_the_server_scores_as_the_local_one(remote_spec):
    settings = {
        "n_perturbations": 4,
        "n_samples": 5,
        "n_bootstrap": 10,
        "embedding_backend": "torch",
        "embedding_max_tokens": None,
        "device": "cpu",
    }
    answers = dict(zip(QUESTIONS, ANSWERS, strict=True))

    def run(**config):
        # the fake model answers every variant of a question with that question's answers
        def answer(prompt: str, i: int) -> str:
            question = next(q for q in QUESTIONS if prompt.endswith(q))
            return answers[question][i % 5]

        guard = Guard(FakeBackend(answer), perturber=FixedVariants(), **settings, **config)
        return guard.arun(QUESTIONS[3])

    want = (await run()).report
    got = (await run(embedding_model=remote_spec)).report
    assert not got.degraded and got.confidence is not None
    assert set(got.scores) == set(want.scores)
    for name, value in want.scores.items():
        assert got.scores[name] == pytest.approx(value, abs=TOLERANCE), name
    assert got.confidence == pytest.approx(want.confidence, abs=TOLERANCE)


async def test_a_server_that_is_down_degrades_the_report_and_keeps_the_reply():
    spec = f"openai:http://127.0.0.1:{free_port()}/v1#{MODEL}"  # nothing listens there
    # GAAP (the default perturbation) embeds prompts too: both steps fail, the reply stands
    guard = Guard(FakeBackend("56."), n_perturbations=2, n_samples=2, embedding_model=spec)
    started = time.monotonic()
    result = await guard.arun("What is 7 times 8?")
    assert result.text == "56."
    report = result.report
    assert report.degraded and report.confidence is None
    reasons = report.degraded_reasons
    endpoint = f"{spec.removeprefix('openai:').partition('#')[0]}/embeddings could not be reached"
    assert any(r.startswith("perturbation failed") and endpoint in r for r in reasons)
    assert any(r.startswith("scoring failed (EmbeddingError)") and endpoint in r for r in reasons)
    assert time.monotonic() - started < 20  # two quick retries per step, then the reply
