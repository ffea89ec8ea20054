# The README's two commands. Both are idempotent and start from a fresh clone.
.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python examples/chatbot.py

test: setup
	.venv/bin/python -m pytest -m "not gpu" -q

lint:
	.venv/bin/ruff check .
