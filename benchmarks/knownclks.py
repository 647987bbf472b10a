"""Synthetic CLKs with a known truth, for fault-injection, load and fuzz runs.

No names or encoding involved: each subject is a random 1024-bit CLK, and each
member holding it gets that CLK with about 1% of its bits flipped (Dice ~0.98),
while unrelated CLKs sit near Dice 0.5. So at any threshold from 0.6 to 0.95 the
right answer is known exactly: two rows match when they are the same subject.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.encoded import Encoded, write_encoded

CLK_BITS = 1024
CLK_BYTES = CLK_BITS // 8
FINGERPRINT = hashlib.sha256(b"blindmatch synthetic CLKs").digest()
NOISE = 0.01


@dataclass(frozen=True)
class Dataset:
    """One member's CLKs, and the subject each row is (never uploaded)."""

    clks: npt.NDArray[np.uint8]  # (n, CLK_BYTES)
    subjects: npt.NDArray[np.int64]  # (n,)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.clks.tobytes()).hexdigest()

    def variant(self, rng: np.random.Generator, keep: float = 0.9) -> Dataset:
        """A re-export: a random `keep`..100% of the rows, in a new order."""
        n = len(self.subjects)
        rows = rng.permutation(n)[: max(1, int(n * rng.uniform(keep, 1.0)))]
        return Dataset(np.ascontiguousarray(self.clks[rows]), self.subjects[rows])


def _noisy(rng: np.random.Generator, clks: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    flips = np.packbits(rng.random((len(clks), CLK_BITS)) < NOISE, axis=1)
    return np.bitwise_xor(clks, flips)


def population(members: int, records: int, overlap: float, seed: int) -> list[Dataset]:
    """`members` datasets of `records` rows; each row is a shared subject with chance `overlap`."""
    rng = np.random.default_rng(seed)
    pool = max(1, records)
    base = rng.integers(0, 256, (pool, CLK_BYTES), dtype=np.uint8)
    out = []
    for m in range(members):
        shared = int(records * overlap)
        picked = rng.choice(pool, size=shared, replace=False)
        own = np.arange(records - shared, dtype=np.int64) + pool + m * records
        clks = np.concatenate(
            [
                _noisy(rng, base[picked]),
                rng.integers(0, 256, (len(own), CLK_BYTES), dtype=np.uint8),
            ]
        )
        subjects = np.concatenate([picked.astype(np.int64), own])
        order = rng.permutation(records)
        out.append(Dataset(np.ascontiguousarray(clks[order]), subjects[order]))
    return out


def expected_hits(datasets: dict[str, Dataset]) -> dict[str, set[tuple[int, str]]]:
    """For each member, its (row, partner) pairs: the partners holding the same subject."""
    holders: dict[int, list[str]] = {}
    for name, ds in datasets.items():
        for s in np.unique(ds.subjects).tolist():
            holders.setdefault(s, []).append(name)
    shared = {s: names for s, names in holders.items() if len(names) > 1}
    hits: dict[str, set[tuple[int, str]]] = {}
    for name, ds in datasets.items():
        mine: set[tuple[int, str]] = set()
        for row, s in enumerate(ds.subjects.tolist()):
            for partner in shared.get(s, ()):
                if partner != name:
                    mine.add((row, partner))
        hits[name] = mine
    return hits


def write(ds: Dataset, path: Path) -> Encoded:
    """Write an ENCODED folder for `ds` (local ids r0, r1, ...)."""
    return write_encoded(
        path,
        clks=ds.clks.tobytes(),
        clk_bits=CLK_BITS,
        fingerprint=FINGERPRINT,
        ids=[f"r{i}" for i in range(len(ds.subjects))],
        report={},
        rule=None,  # synthetic record-level CLKs: no fallback CLK
    )


def hits_of(results_hits: Sequence[object]) -> set[tuple[int, str]]:
    """(row, partner) pairs from `client.remote.model.Results.hits`."""
    return {(h.row, h.partner) for h in results_hits}  # type: ignore[attr-defined]
