"""Synthetic CLKs at any scale, with the structure of real clkhash encodings.

Encoding a million people with clkhash takes minutes per member, so the scale
benchmarks simulate what it produces. A person is a handful of field values
(given name, surname, date of birth, sex, postcode, street), drawn from
Zipf-like frequency tables as real names are; each distinct value of a field
sets a fixed set of bits (as its n-grams would under the shared secret), and a
CLK is the OR of its fields' bits: about 35-40% of 1024 bits set, common
values shared between different people exactly as common surnames are.

Two members share `overlap` of their people. Every shared record carries noise:
one or two fields get a "typo" that replaces ~45% of that value's bits,
so true matches sit at Dice ~0.85-0.95 while different people who share a
common name or birth date reach 0.5-0.7. `truth` pairs the rows of the shared
people. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CLK_BITS = 1024

# field: (distinct values, bits per value, Zipf exponent or 0 for uniform)
FIELDS = {
    "given_name": (5_000, 110, 1.1),
    "surname": (50_000, 120, 1.0),
    "dob": (36_500, 80, 0.0),
    "sex": (2, 15, 0.0),
    "postcode": (300_000, 90, 0.0),
    "street": (100_000, 90, 0.6),
}


@dataclass
class Pair:
    """Two members' CLKs; rows truth_a[k] and truth_b[k] are the same person."""

    a: npt.NDArray[np.uint8]
    b: npt.NDArray[np.uint8]
    truth_a: npt.NDArray[np.int64]
    truth_b: npt.NDArray[np.int64]


def _values(rng: np.random.Generator, n: int, size: int, zipf: float) -> npt.NDArray[np.int64]:
    if not zipf:
        return rng.integers(0, size, n)
    weights = 1.0 / np.arange(1, size + 1) ** zipf
    return rng.choice(size, n, p=weights / weights.sum())


class Population:
    """People (field values) and the bits each field value sets."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tables = {}
        self.values = {}
        for name, (size, k, zipf) in FIELDS.items():
            self.tables[name] = rng.integers(0, CLK_BITS, (size, k), dtype=np.int64)
            self.values[name] = _values(rng, n, size, zipf)
        self.n = n

    def encode(
        self, people: npt.NDArray[np.int64], rng: np.random.Generator, noisy: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.uint8]:
        """CLKs of `people`; rows where `noisy` get typos in one or two fields."""
        out = np.empty((len(people), CLK_BITS // 8), dtype=np.uint8)
        names = list(FIELDS)
        typo_fields = rng.integers(0, len(names), (len(people), 2))
        second = rng.random(len(people)) < 0.35
        step = 65_536
        for lo in range(0, len(people), step):
            sl = slice(lo, lo + step)
            m = len(people[sl])
            bits = np.zeros(m * CLK_BITS, dtype=bool)
            rows = (np.arange(m) * CLK_BITS)[:, None]
            for f, name in enumerate(names):
                pos = self.tables[name][self.values[name][people[sl]]]
                hit = noisy[sl] & (
                    (typo_fields[sl, 0] == f) | (second[sl] & (typo_fields[sl, 1] == f))
                )
                if hit.any():
                    k = pos.shape[1]
                    change = rng.random((int(hit.sum()), k)) < 0.45
                    fresh = rng.integers(0, CLK_BITS, change.shape)
                    pos = pos.copy()
                    pos[hit] = np.where(change, fresh, pos[hit])
                bits[rows + pos] = True
            out[sl] = np.packbits(bits.reshape(m, CLK_BITS), axis=1)
        return out


def member_pair(n: int, overlap: float = 0.1, seed: int = 0) -> Pair:
    """Two members of `n` records each, `overlap` of them the same people (noisy)."""
    rng = np.random.default_rng(seed + 1)
    shared = int(n * overlap)
    pop = Population(2 * n - shared, seed)
    people_a = np.arange(n)
    people_b = np.concatenate([np.arange(shared), np.arange(n, 2 * n - shared)])
    order_b = rng.permutation(n)
    people_b = people_b[order_b]
    a = pop.encode(people_a, rng, np.zeros(n, dtype=bool))
    b = pop.encode(people_b, rng, people_b < shared)
    truth_b = np.flatnonzero(people_b < shared)
    return Pair(a, b, people_b[truth_b], truth_b)


def members(count: int, n: int, overlap: float = 0.1, seed: int = 0) -> list[npt.NDArray[np.uint8]]:
    """`count` members of `n` records; a block of `overlap`·n people is held by all."""
    rng = np.random.default_rng(seed + 1)
    shared = int(n * overlap)
    own = n - shared
    pop = Population(shared + count * own, seed)
    out = []
    for m in range(count):
        people = np.concatenate([np.arange(shared), shared + m * own + np.arange(own)])
        out.append(pop.encode(people, rng, np.arange(n) < shared if m else np.zeros(n, bool)))
    return out
