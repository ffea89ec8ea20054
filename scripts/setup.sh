#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with uq_guard and every
# extra installed editable, then the default local model provisioned.
# Pins torch to the CPU build (constraints.txt) so no CUDA wheels are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# llama-cpp-python (the test suite's real OpenAI-compatible server) builds
# from source: a portable CPU build, not one tuned to this machine's CPU.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.uq_guard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  # (pipefail keeps pip's exit status; the filter only hides this machine's
  # "Location ... is ignored" index warnings)
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 \
    | { grep -v "is ignored" || true; }
  .venv/bin/python -c "import uq_guard, uq_guard_langchain, uq_guard_hf, uq_guard_openai, uq_guard_server"
  touch "$stamp"
fi
.venv/bin/uq-guard setup
# A real OpenAI-compatible embedding server for tests/integration/test_remote_embeddings.py
# (embedding_model="openai:URL#model"): infinity-emb in a venv of its own, since it pins
# numpy<2 and sentence-transformers<4. torch is installed first and held at the CPU build
# of constraints.txt, so pip pulls no CUDA wheels. About 1 minute, once.
if [ ! -x .venv-embeddings/bin/infinity_emb ]; then
  "$PYTHON" -m venv .venv-embeddings
  torch_pin=$(grep -E '^torch==' constraints.txt)
  .venv-embeddings/bin/python -m pip install --quiet "$torch_pin" 2>&1 \
    | { grep -v "is ignored" || true; }
  .venv-embeddings/bin/python -m pip install --quiet -c constraints.txt \
    "infinity-emb[server,torch]==0.0.78" 2>&1 | { grep -v "is ignored" || true; }
fi
# Headless Chromium and its WebDriver, from Debian's packages, for the browser
# test of the evaluation report (tests/integration/test_report_browser.py,
# which fails, naming this step, when they are missing).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get on this machine: install Chromium and chromedriver yourself" \
      "(as chromium and chromedriver on PATH) for the report's browser test" >&2
  elif ! $as_root env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null"; then
    echo "setup: could not install chromium and chromium-driver with apt-get (this needs" \
      "root or password-less sudo): run 'apt-get install -y chromium chromium-driver' as" \
      "root for the report's browser test" >&2
  fi
fi
