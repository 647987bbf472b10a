"""Derive the second generator's name lists (benchmarks/data/heldout-names.csv) from Faker.

    benchmarks/.venv-splink/bin/python -m pip install faker==40.63.0
    benchmarks/.venv-splink/bin/python benchmarks/data/make_heldout_names.py

Run once; the CSV is committed, so the generator (benchmarks/households.py) needs neither
Faker nor the network. The lists are Faker's (MIT licence) for British, Irish, Indian,
Nigerian (Yoruba), Italian and Portuguese names: none of them is the US census list that
benchmarks/messy.py and the privacy attacks' public lists come from. Faker weights only
the British surnames (by their frequency); every other list gets a Zipf skew (weight
1/rank**0.6) over an order fixed by this script's seed, so a few names are common and most
rare, as in real populations.
"""

from __future__ import annotations

import csv
import importlib
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "heldout-names.csv"
ORIGINS = {"GB": "en_GB", "IE": "en_IE", "IN": "en_IN", "NG": "yo_NG", "IT": "it_IT", "PT": "pt_PT"}


# The skew of the lists Faker does not weight: weight 1/rank**S. With S = 0.6 the commonest
# of 182 names is about 5% of people, as the commonest given names of a UK cohort are.
S = 0.6


def zipf(names: list[str], rng: random.Random) -> list[tuple[str, float]]:
    order = sorted(set(names))
    rng.shuffle(order)
    return [(name, 1.0 / rank**S) for rank, name in enumerate(order, start=1)]


def main() -> None:
    rng = random.Random(21)
    rows: list[tuple[str, str, str, str]] = []
    for origin, locale in ORIGINS.items():
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for kind, attr in (
            ("given-female", "first_names_female"),
            ("given-male", "first_names_male"),
            ("surname", "last_names"),
        ):
            names = getattr(provider, attr)
            if hasattr(names, "items"):
                weighted = [(n, float(w)) for n, w in names.items()]
            else:
                weighted = zipf([n for n in names if " " not in n], rng)
            rows.extend((kind, origin, n, f"{w:.6g}") for n, w in weighted)
    with open(OUT, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["kind", "origin", "name", "weight"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} names to {OUT}")


if __name__ == "__main__":
    main()
