"""A templated arithmetic question set: "What is 39 minus 13?" with the number as gold.

The operands are drawn with a fixed seed: sums and differences of two numbers
up to 99, products of two numbers up to 12, and exact quotients. The gold
answer is the number in digits, plus its English word for 0..20 ("seven").
Nothing outside the standard library is needed.

    python benchmarks/datasets/arithmetic.py --out benchmarks/datasets/arithmetic.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def _gold(value: int) -> list[str]:
    return [str(value), _WORDS[value]] if 0 <= value < len(_WORDS) else [str(value)]


def build_questions(n: int = 200, seed: int = 0) -> list[dict[str, object]]:
    """``n`` arithmetic questions (four operations in turn) with gold answers."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        kind = ("plus", "minus", "times", "divided by")[i % 4]
        if kind == "plus":
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            value = a + b
        elif kind == "minus":
            a, b = sorted((rng.randint(1, 99), rng.randint(1, 99)), reverse=True)
            value = a - b
        elif kind == "times":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            value = a * b
        else:
            b, value = rng.randint(2, 12), rng.randint(2, 12)
            a = b * value
        rows.append(
            {
                "id": f"arithmetic:{i}",
                "question": f"What is {a} {kind} {b}?",
                "answer": _gold(value),
            }
        )
    return rows


def write_questions(path: str | Path, n: int = 200, seed: int = 0) -> Path:
    """Write the question set as JSONL; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in build_questions(n, seed)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/datasets/arithmetic.jsonl")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_questions(args.out, args.n, args.seed))
