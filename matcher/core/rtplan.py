"""LSH bands for a standing index, planned from its own CLKs (real clkhash statistics).

A real-time look-up (`lshindex.LshTable`) finds a pair when, in some band, the two CLKs
agree on all but at most `radius` of the band's r sampled bits. Whether that works depends
on how often a matching pair and an unrelated pair differ on the sampled bits, and on real
clkhash encodings neither is what independent, evenly set bits would give
(docs/performance.md, *Real-time look-ups on realistic encodings*): about 55% of the bits
are set, a tenth of the positions are set in more than 80% of records (common bigrams, the
date digits), and unrelated people agree on about 56% of the bits, some pairs (a shared
surname, a near date of birth) on far more. So the plan is made from the data:

- **informative bits only.** Bands sample only positions set in between `INFORMATIVE`
  of the rows: a position set in nearly every record says little about who is who, and a
  band of them collides for nearly everyone.
- **a pair at the threshold, bit by bit.** A pair at Dice t with popcounts pa, pb differs
  in (1 - t)(pa + pb) bits. Which bits those are is modelled from the measured unrelated
  differences: position i differs with a chance proportional to how often unrelated rows
  differ there (a near pair and an unrelated one differ on the same kinds of bits, about
  half as often; measured on realistic encodings). The design pair has both popcounts at
  the index's 99th percentile, the hardest pair that still counts.
- **unrelated collisions from unrelated pairs.** Random pairs of the index's own rows give
  the distribution of how much unrelated rows differ on the sampled positions, and the
  expected rows a query looks at is the average collision chance over that distribution,
  not the chance at its mean (which would miss the near strangers, who dominate).

- **collision counting.** A row may have to share a key (within the radius) with the
  query in at least 2 or 3 bands before it is looked at (`TablePlan.hits`): more, shorter
  bands, whose row lists are read nearly in sequence and counted in two bit planes,
  while the rows met in one band only (the most, at 1,000,000 rows) cost no random read
  of their sketch. The design recall is then the chance that at least that many bands
  hit, and the cost counts the row-list entries read (`ENTRY_COST`).

`plan` then picks the hits, r, the radius and the number of bands for the least expected
work (probes, row-list entries and rows looked at) whose design recall, worked out band by
band for the positions actually drawn, is at least `recall`, within a memory cap. When none reaches
the target, it returns no plan and says why: the index is then scanned in full (exact,
slower), never searched with a plan known to miss pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.lshindex import (
    ENTRY_COST,
    PROBE_COST,
    ROW_COST,
    SEED,
    SKETCH_BITS,
    SKETCH_MISS,
    TablePlan,
    probes_per_band,
)

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]

# The design recall: a pair at the threshold (popcounts at the 99th percentile) is found
# with at least this chance. Pairs above the threshold are found more often.
RECALL = 0.999
# A band samples only positions set in at least the first and at most the second share
# of the rows.
INFORMATIVE = (0.02, 0.8)
MIN_BITS = 10
MAX_BITS = 22  # 2^r + 1 offsets a band
MAX_BANDS = 192
# A row is looked at when it shares a key with the query in at least this many bands
# (collision counting): the planner weighs each.
HITS: tuple[int, ...] = (1, 2, 3)
# Tables (row lists and offsets) take at most this many bytes per indexed row, or
# MIN_BUDGET in all, whichever is more (the CLKs take 128 a row at 1024 bits).
BYTES_PER_ROW = 800
MIN_BUDGET = 32 << 20
# A plan that looks at more than this share of the rows a query is no better than a scan.
MAX_SHARE = 0.2
# Rows and random pairs of them the statistics are measured on.
SAMPLE_ROWS = 20_000
SAMPLE_PAIRS = 40_000


@dataclass(frozen=True)
class Stats:
    """What the planner measures of an index's rows."""

    frequency: npt.NDArray[np.float64]  # (bits,): the share of rows with each bit set
    differ: npt.NDArray[np.float64]  # (bits,): how often two unrelated rows differ there
    pool: npt.NDArray[np.int32]  # the informative positions bands may sample
    pool_differ: npt.NDArray[np.float64]  # (pairs,): each sampled pair's differing share
    popcount_high: float  # the 99th percentile of the rows' popcounts

    def design_differ(self, threshold: float) -> npt.NDArray[np.float64]:
        """(bits,): the chance each position differs in a pair at `threshold` whose
        popcounts are both `popcount_high`."""
        bits = 2 * self.popcount_high * (1 - threshold)
        total = float(self.differ.sum())
        if total <= 0:
            return np.zeros_like(self.differ)
        return np.minimum(1.0, bits * self.differ / total)


def measure(words: U64, popcounts: I32, seed: int = SEED) -> Stats:
    """`Stats` of these rows, from a sample of them."""
    rng = np.random.default_rng(seed)
    n = len(words)
    rows = words[rng.integers(0, n, min(SAMPLE_ROWS, n))] if n > SAMPLE_ROWS else words
    bits = np.unpackbits(np.ascontiguousarray(rows).view(np.uint8), axis=1, bitorder="little")
    frequency = bits.mean(axis=0, dtype=np.float64)
    i = rng.integers(0, len(rows), SAMPLE_PAIRS)
    j = rng.integers(0, len(rows), SAMPLE_PAIRS)
    keep = i != j
    i, j = i[keep], j[keep]
    # Where each pair differs, from the XOR of its packed words (the same 0/1s as comparing
    # the unpacked bits, and so the same means, at a twentieth of the time).
    xor = np.ascontiguousarray(rows[i] ^ rows[j])
    differs = np.unpackbits(xor.view(np.uint8), axis=1, bitorder="little")
    differ = differs.mean(axis=0, dtype=np.float64)
    lo, hi = INFORMATIVE
    pool = np.flatnonzero((frequency >= lo) & (frequency <= hi)).astype(np.int32)
    pool_differ = _pool_share(xor, pool, bits.shape[1]) if len(pool) else np.zeros(len(i))
    high = float(np.quantile(popcounts, 0.99)) if len(popcounts) else 0.0
    return Stats(frequency, differ, pool, pool_differ, high)


def _pool_share(xor: U64, pool: npt.NDArray[np.int32], bits: int) -> npt.NDArray[np.float64]:
    """(pairs,): the share of `pool`'s positions at which each pair differs: its differing
    bits under the pool's mask, counted, over the pool's size (a whole count, so exactly
    the mean of the pair's 0/1s there)."""
    mask = np.zeros(bits, np.uint8)
    mask[pool] = 1
    words = np.packbits(mask, bitorder="little").view(np.uint64)
    counts = np.bitwise_count(xor & words).sum(axis=1, dtype=np.int64)
    share: npt.NDArray[np.float64] = counts / len(pool)
    return share


def within(r: int, radius: int, h: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Chance that at most `radius` of r sampled bits differ, each with chance h."""
    h = np.asarray(h, dtype=np.float64)
    return np.asarray(
        sum(math.comb(r, k) * h**k * (1 - h) ** (r - k) for k in range(radius + 1)),
        dtype=np.float64,
    )


def at_least(hits: int, p: npt.ArrayLike, bands: int) -> npt.NDArray[np.float64]:
    """Chance that at least `hits` of `bands` bands hit, each with chance p (elementwise)."""
    p = np.asarray(p, dtype=np.float64)
    below = sum(math.comb(bands, k) * p**k * (1 - p) ** (bands - k) for k in range(hits))
    return np.asarray(np.clip(1 - below, 0.0, 1.0), dtype=np.float64)


def bands_needed(hits: int, p: float, recall: float, most: int) -> int | None:
    """The fewest bands (at most `most`) of which at least `hits` hit with chance `recall`,
    each hitting with chance p; None when more are needed."""
    if p >= 1:
        return hits
    if hits == 1:
        bands = math.ceil(math.log(1 - recall) / math.log1p(-p)) if p > 0 else most + 1
        return bands if bands <= most else None
    for bands in range(hits, most + 1):
        if float(at_least(hits, p, bands)) >= recall:
            return bands
    return None


def shared_hit(hit: list[float], hits: int) -> float:
    """Chance that at least `hits` of the bands hit, band k with chance hit[k]
    (independently): the Poisson-binomial tail, by dynamic programming."""
    dist = np.zeros(hits + 1)  # counts 0..hits-1, then hits or more
    dist[0] = 1.0
    for p in hit:
        top = dist[hits] + dist[hits - 1] * p
        dist[1:hits] = dist[1:hits] * (1 - p) + dist[: hits - 1] * p
        dist[0] *= 1 - p
        dist[hits] = top
    return float(dist[hits])


def band_hit(d: npt.NDArray[np.float64], radius: int) -> float:
    """Chance that at most `radius` of a band's bits differ, bit k with chance d[k]
    (independently): the Poisson-binomial tail, by dynamic programming."""
    dist = np.zeros(radius + 2)
    dist[0] = 1.0
    for p in d:
        dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
        dist[0] *= 1 - p
    return float(dist[: radius + 1].sum())


@dataclass(frozen=True)
class Planned:
    """A plan, or why there is none (`plan` None), with what was measured."""

    plan: TablePlan | None
    reason: str
    stats: Stats


def plan(
    words: U64,
    popcounts: I32,
    threshold: float,
    *,
    recall: float = RECALL,
    bytes_per_row: int | None = None,
    max_bands: int = MAX_BANDS,
    seed: int = SEED,
    size: int | None = None,
    shared: tuple[int, ...] | None = None,
) -> Planned:
    """The cheapest bands for these rows that find a pair at `threshold` with chance
    `recall`, or none (and why) when no plan within the memory cap does.

    `size`: plan for an index of this many rows like these (a test or a benchmark
    planning for 1,000,000 rows from a sample), instead of len(words). `shared`: the
    least numbers of bands a row must share a key in that may be weighed (default
    `HITS`)."""
    stats = measure(words, popcounts, seed)
    n = len(words) if size is None else size
    if n == 0 or not 0 < threshold <= 1:
        return Planned(None, "no rows or no threshold", stats)
    pool = stats.pool
    if len(pool) < MIN_BITS:
        return Planned(None, f"only {len(pool)} informative bit positions", stats)
    design = stats.design_differ(threshold)
    d_pool = design[pool]
    h1 = float(d_pool.mean())
    if bytes_per_row is None:
        bytes_per_row = BYTES_PER_ROW
    budget = max(bytes_per_row * n, MIN_BUDGET)
    options: list[tuple[float, int, int, int, int, float]] = []
    for hits in HITS if shared is None else shared:
        for r in range(MIN_BITS, min(MAX_BITS, len(pool)) + 1):
            per_band = (n + 2**r + 1) * 4
            most = min(max_bands, budget // per_band)
            for radius in (0, 1, 2):
                chance = float(within(r, radius, h1))
                if chance <= 0:
                    continue
                needed = bands_needed(hits, chance, recall, most)
                if needed is None:
                    continue
                bands = needed
                unrelated = within(r, radius, stats.pool_differ)
                # Row-list entries read (each a row met in a band) and rows looked at
                # (met in at least `hits` bands: a sketch line each).
                entries = bands * n * float(unrelated.mean())
                share = float(at_least(hits, unrelated, bands).mean())
                rows = n * share
                if rows > MAX_SHARE * n:
                    continue
                cost = bands * probes_per_band(r, radius) * PROBE_COST + rows * ROW_COST
                if hits > 1:
                    cost += entries * ENTRY_COST
                options.append((cost, hits, r, radius, bands, share))
    if not options:
        return Planned(
            None,
            f"no plan of at most {max_bands} bands within {bytes_per_row} bytes a row finds "
            f"a pair at Dice {threshold:g} with chance {recall:g} while looking at fewer than "
            f"{MAX_SHARE:.0%} of the rows (each sampled bit differs with chance {h1:.3f} in "
            "such a pair)",
            stats,
        )
    options.sort()
    rng = np.random.default_rng(seed)
    for _, hits, r, radius, bands, share in options[:8]:
        per_band = (n + 2**r + 1) * 4
        positions = [rng.choice(pool, r, replace=False) for _ in range(bands)]
        each = [band_hit(design[p], radius) for p in positions]
        achieved = shared_hit(each, hits)
        # The positions drawn may be a little harder than the average: add bands until
        # the design recall, worked out for them, is met (within the caps).
        while achieved < recall and len(positions) < max_bands:
            extra = rng.choice(pool, r, replace=False)
            positions.append(extra)
            each.append(band_hit(design[extra], radius))
            achieved = shared_hit(each, hits)
        if achieved < recall or len(positions) * per_band > budget:
            continue
        table = np.stack(positions).astype(np.int32)
        return Planned(TablePlan(table, radius, achieved, n * share, hits), "planned", stats)
    return Planned(
        None,
        f"the bands drawn miss a pair at Dice {threshold:g} more often than 1 - {recall:g} "
        f"within {max_bands} bands and {bytes_per_row} bytes a row",
        stats,
    )


def sketch_plan(
    stats: Stats, threshold: float, max_popcount: int, bits: int = SKETCH_BITS,
    miss: float = SKETCH_MISS,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:  # fmt: skip
    """The sketch screen's positions and its cut for each query popcount 0..clk_bits.

    The positions are the `bits` informative ones where unrelated rows differ most (the
    screen's power). A query of popcount pa matches rows of popcount at most
    min(pa (2 - t) / t, max_popcount), so it differs from them in at most
    D = (1 - t)(pa + that) bits, position i with chance D * differ[i] / sum(differ) (the
    model `plan` designs the bands with); the cut is the least c with
    P(more than c sketch bits differ) <= miss, the Poisson-binomial tail.
    """
    clk_bits = len(stats.differ)
    pool = stats.pool if len(stats.pool) >= bits else np.arange(clk_bits, dtype=np.int32)
    best = pool[np.argsort(-stats.differ[pool], kind="stable")[:bits]]
    positions = np.sort(best).astype(np.int32)
    total = float(stats.differ.sum())
    pa = np.arange(clk_bits + 1, dtype=np.float64)
    pb = np.minimum(pa * (2 - threshold) / threshold, float(max_popcount))
    span = (1 - threshold) * (pa + pb)  # D for each query popcount
    share = stats.differ[positions] / total if total > 0 else np.zeros(len(positions))
    # dist[p, k]: chance that k of the sketch's bits differ, for query popcount p.
    dist = np.zeros((clk_bits + 1, len(positions) + 1))
    dist[:, 0] = 1.0
    for m, s in enumerate(share):  # after bit m, only counts 0..m + 1 can be above 0
        d = np.minimum(1.0, span * s)[:, None]
        top = min(m + 2, dist.shape[1])
        dist[:, 1:top] = dist[:, 1:top] * (1 - d) + dist[:, : top - 1] * d
        dist[:, :1] *= 1 - d
    above = 1.0 - np.cumsum(dist, axis=1)  # P(X > k)
    cuts = (above > miss).sum(axis=1).astype(np.int32)  # the least k with P(X > k) <= miss
    cuts[0] = 0
    return positions, np.minimum(cuts, len(positions)).astype(np.int32)
