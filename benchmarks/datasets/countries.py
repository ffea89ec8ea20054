"""An easier question set: capitals and currencies of countries, from ``countryinfo``.

Gold answers: the capital's name; the currency's ISO 4217 name (from
``pycountry``, e.g. "Argentine Peso") and its code ("ARS"). Both packages are
in the ``eval`` extra. Countries without a capital or a named currency are
skipped; the order is shuffled with a fixed seed so that ``--limit`` takes a
mix of both kinds.

    python benchmarks/datasets/countries.py --out benchmarks/datasets/countries.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def build_questions(seed: int = 0) -> list[dict[str, object]]:
    """Capital and currency questions with gold answers, shuffled with ``seed``."""
    import countryinfo
    import pycountry

    rows: list[dict[str, object]] = []
    for country in countryinfo.all_countries():
        name = country.name()
        capital = country.capital()
        if name and capital:
            rows.append(
                {
                    "id": f"capital:{name}",
                    "question": f"What is the capital of {name}?",
                    "answer": [capital],
                }
            )
        for code in country.currencies() or []:
            currency = pycountry.currencies.get(alpha_3=code)
            if name and currency is not None:
                rows.append(
                    {
                        "id": f"currency:{name}:{code}",
                        "question": f"What is the currency of {name}?",
                        "answer": [currency.name, code],
                    }
                )
                break  # one currency question a country
    random.Random(seed).shuffle(rows)
    return rows


def write_questions(path: str | Path, seed: int = 0) -> Path:
    """Write the question set as JSONL; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) for row in build_questions(seed)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/datasets/countries.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    written = write_questions(parser.parse_args().out, parser.parse_args().seed)
    print(f"{sum(1 for _ in written.open())} questions -> {written}")
