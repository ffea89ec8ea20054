"""examples/chatbot.py, the README's demo (``make demo``): run for real on the bundled models."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "examples" / "chatbot.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chatbot_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_other_answers_are_samples_that_differ_from_the_reply_one_prompt_at_a_time() -> None:
    demo = _load_demo()
    report = {
        "original_reply": "Herman Melville.",
        "samples": [
            ["Herman Melville.", " Captain Kidd ", "x" * 80],
            ["Captain Kidd", "Eli Whitney"],
            ["Herman Melville."],
        ],
    }

    assert demo.other_answers(report) == ["Captain Kidd", "x" * 59 + "…", "Eli Whitney"]
    assert demo.other_answers(report, shown=1) == ["Captain Kidd"]
    assert demo.other_answers({"original_reply": "a", "samples": None}) == []


def test_the_demo_answers_every_scripted_question_with_its_confidence() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--no-interactive"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    turns = done.stdout.split("\nyou> ")[1:]
    assert len(turns) == len(_load_demo().SCRIPT)
    for turn in turns:
        found = re.search(r"confidence (\d\.\d\d) \(.*\), decision: (answer|abstain)", turn)
        assert found, turn
        assert 0.0 <= float(found.group(1)) <= 1.0
        if found.group(2) == "abstain":  # the refusal, then what the model had said
            assert "I'm not confident enough" in turn and "(the model had said: " in turn
