"""Candidate look-up for real-time queries: bit-sampling LSH tables over a standing index.

A query must not read every indexed CLK (3 x 1,000,000 of them is 384 MB), so the main
segment of each member's index (`index.Segment`) carries an `LshTable`: for each
of `bands` bands, a fixed random choice of `r` bit positions, and the rows grouped by the
value of those bits (their *key*), as a counting-sorted CSR table — `offsets[band]` (2^r + 1
entries) and `rows[band]` (n row numbers). A query computes its key in each band and reads
the rows under that key and under every key within `radius` flipped bits of it
(multi-probe); each row found is decided by the exact Dice test (`_kernel.c`,
`lsh_search`), so a score is never approximate: blocking can only miss a pair, never add
or alter one.

Two CLKs that differ in a fraction h of their bits share a band key with probability
(1 - h)^r, or, probing radius m, sum_{i<=m} C(r, i) h^i (1 - h)^(r - i): the chance that at
most m of the r sampled bits differ. A pair at Dice D whose popcounts add up to P differs
in P(1 - D) bits. `plan_tables` designs for the worst pair that still counts, one at exactly the
threshold with both popcounts at the index's 99th percentile, and picks r, the radius and
the number of bands that find such a pair with probability `recall` for the least work
(probes plus unrelated rows decided, from the index's bit frequencies), within a memory
cap. Pairs above the threshold are found more often than that (see docs/realtime.md).

Each row also has a *sketch*: its bits at `SKETCH_BITS` further fixed positions, 32 bytes
kept beside the tables (a cache line holds two; the big arrays are page-aligned). A query
reads a candidate's sketch before its CLK and skips the row when the two sketches differ in
more than `sketch_cut` bits: a pair at the threshold does that with chance at most
`SKETCH_MISS`, while an unrelated row (differing in far more of its bits) nearly always
does, so most candidates cost one cache line instead of a CLK's two, and far fewer CLKs are
read. The screen only skips rows; every row kept is still decided exactly.

The bit positions come from a public seed: they are not secret (the CLKs are), and the
members upload nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import hugepages, kernel

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
# Longer keys cost memory (2^r offsets a band) and save time: at 1,000,000 rows, 21-bit
# keys answer in about 0.6 of the time 19-bit keys take (docs/performance.md).
BYTES_PER_ROW = 640
# Relative cost of one probe (its offsets, then its row list: two dependent cache misses)
# and of one candidate row looked at (its sketch: one miss; the few rows that pass the
# sketch screen are read in full, which this folds in).
PROBE_COST = 2.0
ROW_COST = 1.0
# Under collision counting (`TablePlan.hits` above 1) each row-list entry read: its share
# of the row list's lines and its count in two bit planes. Fitted to look-ups of 1,000,000
# realistic rows at 1, 2 and 3 hits (0.33-0.47 a random line's cost; docs/performance.md).
ENTRY_COST = 0.4
# The sketch screen: bits per row, and the most a pair at the threshold may be screened out.
# 256 bits rather than 128: on synthetic person CLKs (unrelated rows agree on more than
# half their bits) 128 let ~10% of candidates through to a full read and 256 ~3%, for the
# same one cache line a candidate (look-ups 0.86 of the time; docs/performance.md).
SKETCH_BITS = 256
SKETCH_MISS = 1e-4


@dataclass(frozen=True)
class TablePlan:
    positions: npt.NDArray[np.int32]  # (bands, r): bit p is bit p % 64 of word p // 64
    radius: int  # probe keys within this many flipped bits (0, 1 or 2)
    design_recall: float  # for a pair at the threshold, popcounts at the 99th percentile
    expected_rows: float  # unrelated rows decided per query (from the bit frequencies)
    # A row is looked at only when it is under at least this many of a query's probed keys
    # (in that many bands): collision counting, 1-3 (docs/realtime.md).
    hits: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", np.ascontiguousarray(self.positions, np.int32))
        if self.hits not in (1, 2, 3):
            raise ValueError(f"hits must be 1, 2 or 3, not {self.hits}")

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
        shared = f", in at least {self.hits} bands" if self.hits > 1 else ""
        return (
            f"{self.bands} bands x {self.bits_per_band} bits, radius {self.radius}{shared}: "
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


def plan_tables(
    n: int,
    clk_bits: int,
    popcount_high: float,
    agreement: float,
    threshold: float,
    *,
    recall: float = DESIGN_RECALL,
    bytes_per_row: int = BYTES_PER_ROW,
    seed: int = SEED,
) -> TablePlan | None:
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
    return TablePlan(positions.astype(np.int32), radius, achieved, rows)


@lru_cache(maxsize=4096)
def sketch_cut(popcount: int, threshold: float, clk_bits: int, sketch_bits: int = SKETCH_BITS,
               miss: float = SKETCH_MISS) -> int:  # fmt: skip
    """The most sketch bits a query of this popcount may differ in from a row it matches.

    A pair with Dice >= t differs in at most (1 - t)(pa + pb) bits, and pb is at most
    pa (2 - t) / t, so each sampled bit differs with chance at most h = that / clk_bits.
    The cut is the smallest c with P(X > c) <= miss for X ~ Binomial(sketch_bits, h);
    the true count (sampling without replacement) is more concentrated still.
    """
    if not 0 < threshold <= 1 or popcount <= 0:
        return sketch_bits
    pb = min(float(clk_bits), popcount * (2 - threshold) / threshold)
    h = min(1.0, (1 - threshold) * (popcount + pb) / clk_bits)
    if h <= 0:
        return 0
    if h >= 1:
        return sketch_bits
    tail = 0.0
    comb = _binomials(sketch_bits)
    for k in range(sketch_bits, -1, -1):
        pmf = comb[k] * h**k * (1 - h) ** (sketch_bits - k)
        if tail + pmf > miss:
            return k
        tail += pmf
    return 0


@lru_cache(maxsize=8)
def _binomials(n: int) -> tuple[float, ...]:
    """C(n, k) for k = 0..n, as the floats `int * float` converts them to: `sketch_cut`'s
    terms are the same to the bit, without a big-integer C(n, k) per term (a new threshold's
    cuts, 1,025 popcounts of up to 257 terms each, took ~80 ms, nearly all in math.comb)."""
    return tuple(float(math.comb(n, k)) for k in range(n + 1))


def sketch_positions(clk_bits: int, seed: int = SEED) -> npt.NDArray[np.int32]:
    """The bits each row's sketch samples (public, like the bands')."""
    rng = np.random.default_rng(seed + 1)
    count = min(SKETCH_BITS, clk_bits)
    return np.sort(rng.choice(clk_bits, count, replace=False)).astype(np.int32)


def sketches(words: U64, positions: npt.NDArray[np.int32]) -> U64:
    """(n, ceil(s / 64)) words: bit j of a row's sketch is its bit positions[j]."""
    n, w = words.shape
    out = hugepages.empty((n, (len(positions) + 63) // 64), np.uint64)
    out[...] = 0
    if kernel.NATIVE:
        kernel._kernel.sketch(np.ascontiguousarray(words), w, positions, out)
        return out
    pos = positions.astype(np.int64)
    for j, p in enumerate(pos):
        bit = (words[:, p // 64] >> np.uint64(p % 64)) & np.uint64(1)
        out[:, j // 64] |= bit << np.uint64(j % 64)
    return out


def sketch_cuts(threshold: float, clk_bits: int) -> npt.NDArray[np.int32]:
    """`sketch_cut` for every query popcount 0..clk_bits, at this threshold."""
    bits = min(SKETCH_BITS, clk_bits)  # as many as sketch_positions samples
    return np.array(
        [sketch_cut(pa, threshold, clk_bits, bits) for pa in range(clk_bits + 1)], np.int32
    )


@dataclass(frozen=True)
class LshTable:
    """One segment's tables; read-only once built, so queries share it without locks.

    `threshold` is the lowest the sketch cuts were chosen for; a query at a lower threshold
    gets its cut worked out on the spot. `prepared` holds the native kernel's grip on
    the buffers (the segment's CLKs among them), so a query passes only itself.
    """

    plan: TablePlan
    offsets: npt.NDArray[np.uint32]  # (bands, 2^r + 1)
    rows: npt.NDArray[np.uint32]  # (bands, n)
    sketch_positions: npt.NDArray[np.int32]  # (s,)
    sketches: U64  # (n, ceil(s / 64)): each row's sketch
    threshold: float
    cuts: npt.NDArray[np.int32]  # (clk_bits + 1,): the sketch cut per query popcount
    prepared: object = field(default=None, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        words: U64,
        plan: TablePlan,
        threshold: float,
        sketch: tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]] | None = None,
    ) -> LshTable:
        """Tables over `words` (which queries must then search) for pairs at `threshold`.

        `sketch`: the sketch's positions and its cut per query popcount, when planned from
        the data (rtplan.py); by default uniformly drawn positions and binomial cuts."""
        n, w = words.shape
        words = np.ascontiguousarray(words)
        offsets = hugepages.empty((plan.bands, 2**plan.bits_per_band + 1), np.uint32)
        rows = hugepages.empty((plan.bands, n), np.uint32)
        if kernel.NATIVE:
            kernel._kernel.lsh_build(words, w, plan.positions, plan.bits_per_band, offsets, rows)
        else:
            keys = band_keys(words, plan)
            for b in range(plan.bands):
                order = np.argsort(keys[b], kind="stable")
                rows[b] = order
                counts = np.bincount(keys[b], minlength=2**plan.bits_per_band)
                offsets[b, 0] = 0
                np.cumsum(counts, out=offsets[b, 1:])
        positions, cuts = sketch or (sketch_positions(w * 64), sketch_cuts(threshold, w * 64))
        sketched = sketches(words, positions)
        prepared = None
        if kernel.NATIVE:
            prepared = kernel._kernel.lsh_prepare(
                words, w, plan.positions, plan.bits_per_band, offsets, rows, plan.radius,
                positions, sketched, cuts, plan.hits,
            )  # fmt: skip
        return cls(plan, offsets, rows, positions, sketched, threshold, cuts, prepared)

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.rows.nbytes + self.sketches.nbytes)

    def _cut(self, query: U64, threshold: float) -> int:
        """-1 (the prepared cut) at or above the tables' threshold, else this query's."""
        if threshold >= self.threshold:
            return -1
        popcount = int(np.bitwise_count(query).sum())
        return sketch_cut(popcount, threshold, query.shape[-1] * 64, len(self.sketch_positions))

    def search(
        self, words: U64, popcounts: I32, query: U64, threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
        """(rows, scores, rows looked at): the rows found, decided exactly, unordered.

        `words` and `popcounts` are the segment's, the rows the tables were built over."""
        rows, sims, looked, _ = self.search_counted(words, popcounts, query, threshold)
        return rows, sims, looked

    def search_counted(
        self, words: U64, popcounts: I32, query: U64, threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int, int]:
        """As `search`, and also how many rows passed the sketch screen and were read."""
        if len(words) != self.rows.shape[1]:
            raise ValueError("search the rows the tables were built over")
        cut = self._cut(query, threshold)
        if self.prepared is None:
            if cut < 0:
                cut = int(self.cuts[int(np.bitwise_count(query).sum())])
            return self._search_numpy(words, popcounts, query, threshold, cut)
        sims, found, looked, read = kernel._kernel.lsh_query(
            self.prepared, np.ascontiguousarray(query).tobytes(), float(threshold), cut
        )
        return (
            np.frombuffer(found, dtype=np.uint32).astype(np.int64),
            np.frombuffer(sims, dtype=np.float64),
            int(looked),
            int(read),
        )

    def _search_numpy(
        self, words: U64, popcounts: I32, query: U64, threshold: float, cut: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int, int]:
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
            return np.empty(0, np.int64), np.empty(0, np.float64), looked, 0
        cand, count = np.unique(np.concatenate(parts), return_counts=True)
        cand = cand[count >= p.hits].astype(np.int64)
        own = sketches(query[None, :], self.sketch_positions)[0]
        differ = np.bitwise_count(self.sketches[cand] ^ own).sum(axis=1)
        cand = cand[differ <= cut]
        both = np.bitwise_count(words[cand] & query).sum(axis=1, dtype=np.int64)
        pa = np.full(len(cand), int(np.bitwise_count(query).sum()), dtype=np.int64)
        sims, keep = kernel._decide(
            both, pa, popcounts[cand].astype(np.int64), float(threshold), words.shape[1] * 64
        )
        return cand[keep], sims[keep], looked, len(cand)


def search_many(
    tables: Sequence[LshTable], query: U64, threshold: float
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] | None:
    """`LshTable.search` of `query` on each prepared table, in one native call.

    A query searches every partner's index; one call releases the GIL once for all of
    them instead of once each (every release is a chance for 20 other threads to take
    it, and a thread switch to get it back). None when a table is not prepared (no
    native kernel): search them one by one then."""
    if any(t.prepared is None for t in tables):
        return None
    answers = kernel._kernel.lsh_query_many(
        tuple(t.prepared for t in tables),
        np.ascontiguousarray(query).tobytes(),
        float(threshold),
        tuple(t._cut(query, threshold) for t in tables),
    )
    return [
        (np.frombuffer(found, dtype=np.uint32).astype(np.int64), np.frombuffer(sims, np.float64))
        for sims, found, _, _ in answers
    ]


def band_keys(words: U64, plan: TablePlan) -> npt.NDArray[np.uint32]:
    """(bands, n) keys: bit j of a key is bit positions[band, j] of the CLK."""
    pos = plan.positions.astype(np.int64)
    sampled = (words[:, pos // 64] >> (pos % 64).astype(np.uint64)) & np.uint64(1)
    weights = np.uint64(1) << np.arange(plan.bits_per_band, dtype=np.uint64)
    return (sampled * weights).sum(axis=2).T.astype(np.uint32)
