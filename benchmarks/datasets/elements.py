"""A templated chemistry question set: "What is the chemical symbol for gold?" → "Au".

A question type that no calibration or design choice of this repository was
made on: it is the held-out check of the default confidence (see
``benchmarks/results/README.md``). The 100 lightest elements with their
symbols as gold, less those a containment grader would find in any reply:
one-letter symbols ("I", "C") and the English words He, Be, As, In, At, Am.
Nothing outside the standard library is needed.

    python benchmarks/datasets/elements.py --out benchmarks/datasets/elements.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ELEMENTS = """
hydrogen H, helium He, lithium Li, beryllium Be, boron B, carbon C, nitrogen N, oxygen O,
fluorine F, neon Ne, sodium Na, magnesium Mg, aluminium Al, silicon Si, phosphorus P,
sulfur S, chlorine Cl, argon Ar, potassium K, calcium Ca, scandium Sc, titanium Ti,
vanadium V, chromium Cr, manganese Mn, iron Fe, cobalt Co, nickel Ni, copper Cu, zinc Zn,
gallium Ga, germanium Ge, arsenic As, selenium Se, bromine Br, krypton Kr, rubidium Rb,
strontium Sr, yttrium Y, zirconium Zr, niobium Nb, molybdenum Mo, technetium Tc,
ruthenium Ru, rhodium Rh, palladium Pd, silver Ag, cadmium Cd, indium In, tin Sn,
antimony Sb, tellurium Te, iodine I, xenon Xe, caesium Cs, barium Ba, lanthanum La,
cerium Ce, praseodymium Pr, neodymium Nd, promethium Pm, samarium Sm, europium Eu,
gadolinium Gd, terbium Tb, dysprosium Dy, holmium Ho, erbium Er, thulium Tm, ytterbium Yb,
lutetium Lu, hafnium Hf, tantalum Ta, tungsten W, rhenium Re, osmium Os, iridium Ir,
platinum Pt, gold Au, mercury Hg, thallium Tl, lead Pb, bismuth Bi, polonium Po,
astatine At, radon Rn, francium Fr, radium Ra, actinium Ac, thorium Th, protactinium Pa,
uranium U, neptunium Np, plutonium Pu, americium Am, curium Cm, berkelium Bk,
californium Cf, einsteinium Es, fermium Fm
"""


#: Symbols that are English words: a reply "as it is" would contain the gold "As".
ENGLISH_WORDS = frozenset({"He", "Be", "As", "In", "At", "Am"})


def questions() -> list[dict[str, object]]:
    """One question per gradable element, in order of atomic number."""
    pairs = [item.split() for item in ELEMENTS.replace("\n", " ").split(",")]
    return [
        {
            "id": f"elements:{number}",
            "question": f"What is the chemical symbol for {name}?",
            "answer": [symbol],
        }
        for number, (name, symbol) in enumerate(pairs, start=1)
        if len(symbol) > 1 and symbol not in ENGLISH_WORDS
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = [json.dumps(item) for item in questions()]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} questions -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
