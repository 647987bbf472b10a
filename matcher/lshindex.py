"""Candidate look-up for real-time queries: bit-sampling LSH tables over a standing index.

A query must not read every indexed CLK (3 x 1,000,000 of them is 384 MB), so the main
segment of each member's index (`matcher.index.Segment`) carries an `LshTable`: for each
of `bands` bands, a fixed random choice of `r` bit positions, and the rows grouped by the
value of those bits (their *key*), as a counting-sorted CSR table — `offsets[band]` (2^r + 1
entries) and `rows[band]` (n row numbers). A query computes its key in each band and reads
the rows under that key and under every key within `radius` flipped bits of it
(multi-probe); each row found is decided by the exact Dice test (`matcher/_kernel.c`,
`lsh_search`), so a score is never approximate: blocking can only miss a pair, never add
or alter one.

Two CLKs that differ in a fraction h of their bits share a band key with probability
(1 - h)^r, or, probing radius m, sum_{i<=m} C(r, i) h^i (1 - h)^(r - i): the chance that at
most m of the r sampled bits differ. A pair at Dice D whose popcounts add up to P differs
in P(1 - D) bits. `plan` designs for the worst pair that still counts, one at exactly the
threshold with both popcounts at the index's 99th percentile, and picks r, the radius and
the number of bands that find such a pair with probability `recall` for the least work
(probes plus unrelated rows decided, from the index's bit frequencies), within a memory
cap. Pairs above the threshold are found more often than that (see docs/realtime.md).

The bit positions come from a public seed: they are not secret (the CLKs are), and the
members upload nothing extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher import kernel

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]

SEED = 0x7274_6C73  # public
# Below this many rows a straight scan (AVX-512, one pass) is as fast as the look-up.
MIN_ROWS = 40_000
# Each pair at the threshold (popcounts at the 99th percentile) is found with this chance.
DESIGN_RECALL = 0.998
MAX_BITS = 22
MAX_BANDS = 64
# Tables take at most this many bytes per indexed row (the CLKs take 128 at 1024 bits).
BYTES_PER_ROW = 256
# Relative cost of one probe (offsets and a row list: ~1-2 cache misses) and of one
# candidate row decided (its CLK: 2 cache lines and a popcount).
PROBE_COST = 1.0
ROW_COST = 1.5


@dataclass(frozen=True)
class LshPlan:
    positions: npt.NDArray[np.int32]  # (bands, r): bit p is bit p % 64 of word p // 64
    radius: int  # probe keys within this many flipped bits (0, 1 or 2)
    design_recall: float  # for a pair at the threshold, popcounts at the 99th percentile
    expected_rows: float  # unrelated rows decided per query (from the bit frequencies)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", np.ascontiguousarray(self.positions, np.int32))

    @property
    def bands(self) -> int:
        return int(self.positions.shape[0])

    @property
    def bits_per_band(self) -> int:
        return int(self.positions.shape[1])

    @property
    def probes(self) -> int:
        """Keys looked up per query."""
        return self.bands * probes_per_band(self.bits_per_band, self.radius)

    def describe(self) -> str:
        return (
            f"{self.bands} bands x {self.bits_per_band} bits, radius {self.radius}: "
            f"{self.probes} probes and ~{self.expected_rows:.0f} unrelated rows per query, "
            f"recall {self.design_recall:.4f} at the threshold"
        )


def probes_per_band(r: int, radius: int) -> int:
    return sum(math.comb(r, i) for i in range(radius + 1))


def _within(r: int, radius: int, p_differ: float) -> float:
    """Chance that at most `radius` of r sampled bits differ, each with chance p_differ."""
    return sum(math.comb(r, i) * p_differ**i * (1 - p_differ) ** (r - i) for i in range(radius + 1))


def bit_agreement(words: U64, sample: int = 20_000, seed: int = SEED) -> float:
    """How often two unrelated rows agree on a bit: the mean of f^2 + (1-f)^2 over bits."""
    if len(words) == 0:
        return 0.5
    rng = np.random.default_rng(seed)
    rows = words[rng.integers(0, len(words), min(sample, len(words)))]
    f = np.unpackbits(rows.view(np.uint8), axis=1, bitorder="little").mean(axis=0)
    return float(np.mean(f * f + (1 - f) * (1 - f)))


def plan(
    n: int,
    clk_bits: int,
    popcount_high: float,
    agreement: float,
    threshold: float,
    *,
    recall: float = DESIGN_RECALL,
    bytes_per_row: int = BYTES_PER_ROW,
    seed: int = SEED,
) -> LshPlan | None:
    """The cheapest bands for an index of n rows, or None when none fits the memory cap.

    `popcount_high` is a high percentile of the rows' popcounts and `agreement` the chance
    two unrelated rows agree on a bit (`bit_agreement`).
    """
    if n == 0 or not 0 < threshold <= 1:
        return None
    h = min(0.5, 2 * popcount_high * (1 - threshold) / clk_bits)  # differing bits at t
    q = min(max(agreement, 0.5), 0.999)
    budget = max(bytes_per_row * n, 32 << 20)
    best: tuple[float, int, int, int, float] | None = None
    top = min(MAX_BITS, clk_bits, max(8, math.ceil(math.log2(max(n, 2))) + 1))
    for r in range(8, top + 1):
        for radius in (0, 1, 2):
            hit = _within(r, radius, h)
            if hit <= 0:
                continue
            bands = 1 if hit >= 1 else math.ceil(math.log(1 - recall) / math.log1p(-hit))
            if bands > MAX_BANDS or bands * (n + 2**r + 1) * 4 > budget:
                continue
            rows = bands * n * _within(r, radius, 1 - q)
            cost = bands * probes_per_band(r, radius) * PROBE_COST + rows * ROW_COST
            if best is None or cost < best[0]:
                best = (cost, r, radius, bands, rows)
    if best is None:
        return None
    _, r, radius, bands, rows = best
    rng = np.random.default_rng(seed)
    positions = np.stack([rng.choice(clk_bits, r, replace=False) for _ in range(bands)])
    achieved = 1 - (1 - _within(r, radius, h)) ** bands
    return LshPlan(positions.astype(np.int32), radius, achieved, rows)


@dataclass(frozen=True)
class LshTable:
    """One segment's tables; read-only once built, so queries share it without locks."""

    plan: LshPlan
    offsets: npt.NDArray[np.uint32]  # (bands, 2^r + 1)
    rows: npt.NDArray[np.uint32]  # (bands, n)

    @classmethod
    def build(cls, words: U64, plan: LshPlan) -> LshTable:
        n, w = words.shape
        offsets = np.empty((plan.bands, 2**plan.bits_per_band + 1), dtype=np.uint32)
        rows = np.empty((plan.bands, n), dtype=np.uint32)
        if kernel.NATIVE:
            kernel._kernel.lsh_build(
                np.ascontiguousarray(words), w, plan.positions, plan.bits_per_band, offsets, rows
            )
        else:
            keys = band_keys(words, plan)
            for b in range(plan.bands):
                order = np.argsort(keys[b], kind="stable")
                rows[b] = order
                counts = np.bincount(keys[b], minlength=2**plan.bits_per_band)
                offsets[b, 0] = 0
                np.cumsum(counts, out=offsets[b, 1:])
        return cls(plan, offsets, rows)

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.rows.nbytes)

    def search(
        self, words: U64, popcounts: I32, query: U64, threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
        """(rows, scores, rows looked at): the rows found, decided exactly, unordered."""
        p = self.plan
        if kernel.NATIVE:
            sims, found, looked = kernel._kernel.lsh_search(
                words,
                words.shape[1],
                p.positions,
                p.bits_per_band,
                self.offsets,
                self.rows,
                p.radius,
                np.ascontiguousarray(query),
                float(threshold),
            )
            return (
                np.frombuffer(found, dtype=np.uint32).astype(np.int64),
                np.frombuffer(sims, dtype=np.float64),
                int(looked),
            )
        return self._search_numpy(words, popcounts, query, threshold)

    def _search_numpy(
        self, words: U64, popcounts: I32, query: U64, threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
        p = self.plan
        r = p.bits_per_band
        keys0 = band_keys(query[None, :], p)[:, 0].astype(np.int64)
        flips = [0]
        if p.radius >= 1:
            flips += [1 << i for i in range(r)]
        if p.radius >= 2:
            flips += [(1 << i) | (1 << j) for i in range(r) for j in range(i + 1, r)]
        probe = keys0[:, None] ^ np.array(flips, dtype=np.int64)[None, :]
        band = np.repeat(np.arange(p.bands), len(flips))
        lo = self.offsets[band, probe.ravel()].astype(np.int64)
        hi = self.offsets[band, probe.ravel() + 1].astype(np.int64)
        parts = [self.rows[b, s:e] for b, s, e in zip(band, lo, hi, strict=True) if e > s]
        looked = int((hi - lo).sum())
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.float64), looked
        cand = np.unique(np.concatenate(parts)).astype(np.int64)
        both = np.bitwise_count(words[cand] & query).sum(axis=1, dtype=np.int64)
        pa = np.full(len(cand), int(np.bitwise_count(query).sum()), dtype=np.int64)
        sims, keep = kernel._decide(
            both, pa, popcounts[cand].astype(np.int64), float(threshold), words.shape[1] * 64
        )
        return cand[keep], sims[keep], looked


def band_keys(words: U64, plan: LshPlan) -> npt.NDArray[np.uint32]:
    """(bands, n) keys: bit j of a key is bit positions[band, j] of the CLK."""
    pos = plan.positions.astype(np.int64)
    sampled = (words[:, pos // 64] >> (pos % 64).astype(np.uint64)) & np.uint64(1)
    weights = np.uint64(1) << np.arange(plan.bits_per_band, dtype=np.uint64)
    return (sampled * weights).sum(axis=2).T.astype(np.uint32)
