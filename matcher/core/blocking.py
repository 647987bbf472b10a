"""Blocking: candidate pairs without comparing all pairs, by LSH on the CLK bits.

Bit-sampling locality-sensitive hashing for Hamming distance: a *band* is a
fixed random choice of `bits_per_band` (r) bit positions, and a record's key in
the band is the value of those bits. Two CLKs collide in a band when they agree
on every sampled bit; a pair becomes a candidate when it collides in any of
`bands` (L) bands, and every candidate is then decided by the exact Dice kernel.
Blocking only ever drops pairs, never adds or alters a score.

`plan` designs the bands from the data, because real clkhash encodings are not
random bits (docs/performance.md): about 55% of bits are set, some bits in nearly
every record (common bigrams, date digits), and unrelated people agree on far
more bits than independent bits would. So the planner

- leaves out uninformative bits, set in more than `DENSE_BIT` or fewer than
  `SPARSE_BIT` of the sampled records: they say little about who is who;
- models a band's collision chance for unrelated pairs from measured pairs: it
  samples random cross-member pairs, counts on how many of the M informative bits
  each agrees (A), and averages the chance that r bits drawn from the M all fall
  where the pair agrees, prod_k (A - k) / (M - k), so the heavy tail (same sex,
  same birth year, common names) is priced in rather than assumed away;
- designs for the worst pair that still counts: one at exactly the threshold
  with both popcounts at the sample's 99th percentile, all of its differing bits
  among the informative ones; such a pair collides in a band with chance
  prod_k (M - d - k) / (M - k), and L bands find it with chance
  1 - (1 - that)^L, the plan's *design recall*;
- picks the r, and the L that reaches the target recall (0.999), of least
  estimated cost (keys and sorting per row and band, plus each proposed
  comparison), with no band cap below `MAX_BANDS`.

When no plan reaches the target within `MAX_BANDS`, or the cheapest would cost
more than comparing every pair, `plan` returns a `NoPlan` saying why, and the
run compares exhaustively (usecases.runs): a plan whose design recall is below
the target is never used.

A run plans each shape of pair on its own (`plan_pairs`, usecases.runs): the
statistics once over all the members, then for each pair of member sizes the
cheapest bands, or every pair of rows for that pair only where no plan reaches
the target or one would cost more.

The bands come from a public seed: members need no extra secret and upload
nothing extra. The comparing itself is native (`_lshbatch.c`, `compare_bands`):
keys computed for a group of bands in one pass, counting-sorted per band, and
each run of equal keys scored as a small dense tile.

Everything here is pure: arrays in, arrays out.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import kernel
from blindmatch.matcher.core.kernel import dice_pairs
from blindmatch.matcher.core.pairdedupe import dedupe, dedupe_numpy  # noqa: F401 (re-exported)
from blindmatch.matcher.domain import counted

Clks = npt.NDArray[np.uint8]

SEED = 0x626D_6C73  # public: the bands are not a secret, the CLKs are
TARGET_RECALL = 0.999  # design recall every plan must reach
MAX_BANDS = 20_000
MIN_BITS, MAX_BITS = 8, 32  # bits per band
DENSE_BIT = 0.95  # bits set in more of the sampled records than this are left out
SPARSE_BIT = 0.02  # and those set in fewer than this
SAMPLE_ROWS = 8_192  # rows sampled per dataset for bit frequencies and popcounts
SAMPLE_PAIRS = 40_000  # unrelated pairs sampled for the collision model
# Estimated CPU seconds (one core): per row and band (its key, its sort, and reading the
# row when it collides: a cache miss, most of the cost), per proposed comparison (in a
# tile of the native kernel), and per pair compared exhaustively (the dense kernel);
# measured at 1M x 1M on realistic encodings (docs/performance.md).
COST_ROW = 100e-9
COST_PAIR = 1.5e-9
COST_DENSE = 1.15e-9
PAIRS_PER_STEP = 4_000_000  # candidate pairs generated (and decided) at a time (numpy path)


@dataclass(frozen=True)
class LshPlan:
    """Which bits each band samples: positions[band] holds `bits_per_band` positions
    (bit p of a CLK is bit p % 64 of its 64-bit word p // 64)."""

    positions: npt.NDArray[np.int32]  # (bands, bits_per_band)
    design_dice: float  # a pair at this Dice (popcounts high) is found with `design_recall`
    design_recall: float
    expected_comparisons: float = 0.0  # proposed comparisons, all pairs of datasets
    informative_bits: int = 0  # bits the bands sample from

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", np.ascontiguousarray(self.positions, np.int32))

    @property
    def bands(self) -> int:
        return int(self.positions.shape[0])

    @property
    def bits_per_band(self) -> int:
        return int(self.positions.shape[1])

    def describe(self) -> str:
        return (
            f"{self.bands} bands x {self.bits_per_band} of {self.informative_bits} informative "
            f"bits, design recall {self.design_recall:.4f} at Dice {self.design_dice:g}, "
            f"~{self.expected_comparisons:.3g} comparisons"
        )


@dataclass(frozen=True)
class NoPlan:
    """No plan reaches the target recall cheaply: compare exhaustively instead."""

    reason: str
    design_recall: float  # the best any plan within the limits reaches
    target: float = TARGET_RECALL

    @property
    def message(self) -> str:
        if self.design_recall < self.target:
            return (
                f"plan design recall {self.design_recall:.4f} below target {self.target:g}: "
                f"comparing exhaustively ({self.reason})"
            )
        return (
            f"no LSH plan at design recall {self.target:g} is cheaper than comparing every "
            f"pair: comparing exhaustively ({self.reason})"
        )


class LshPlanError(ValueError):
    """An LSH plan below the target recall was about to be used."""


def _bits(rows: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """(n, bits) 0/1: bit p is bit p % 64 of word p // 64."""
    return np.unpackbits(
        np.ascontiguousarray(rows).view(np.uint8), axis=1, bitorder="little"
    ).reshape(len(rows), -1)


def _hypergeometric_run(
    have: npt.NDArray[np.float64], total: int, r_max: int
) -> npt.NDArray[np.float64]:
    """(len(have), r_max + 1): chance that r bits drawn from `total` all fall among `have`."""
    k = np.arange(r_max, dtype=np.float64)
    steps = np.clip(have[:, None] - k[None, :], 0, None) / (total - k)[None, :]
    return np.concatenate([np.ones((len(have), 1)), np.cumprod(steps, axis=1)], axis=1)


@dataclass(frozen=True)
class _Design:
    """What the planner measured of a run's data (`_measure`): shared by every plan of it."""

    rng: np.random.Generator  # continues where the sampling left off: draws the bands
    informative: npt.NDArray[np.int64]
    unrelated: npt.NDArray[np.float64]  # chance an unrelated pair collides in r bits, by r
    design: npt.NDArray[np.float64]  # chance the design pair collides in r bits, by r
    m: int
    r_max: int


def _measure(
    datasets: Sequence[Clks],
    sizes: Sequence[int],
    threshold: float,
    recall: float,
    seed: int,
    sample: int,
    pairs: int,
) -> _Design | NoPlan:
    present = [d for d in datasets if len(d)]
    if len(present) < 2 or sum(1 for n in sizes if n) < 2:
        return NoPlan("fewer than two datasets with rows", 0.0, recall)
    if not 0 < threshold <= 1:
        return NoPlan(f"threshold {threshold} keeps pairs with no bits in common", 0.0, recall)
    width = present[0].shape[1]
    if width % 8:
        return NoPlan("CLKs are not a whole number of 64-bit words", 0.0, recall)
    rng = np.random.default_rng(seed)
    picked = [np.sort(rng.choice(len(d), min(sample, len(d)), replace=False)) for d in present]
    samples = [
        np.ascontiguousarray(d[k]).view(np.uint64) for d, k in zip(present, picked, strict=True)
    ]
    counts = sum(_bits(x).sum(axis=0, dtype=np.int64) for x in samples)
    freq = counts / sum(len(x) for x in samples)
    keep = (freq >= SPARSE_BIT) & (freq <= DENSE_BIT)
    informative = np.flatnonzero(keep)
    mask = np.packbits(keep.astype(np.uint8), bitorder="little").view(np.uint64)
    m = len(informative)
    popcounts = np.concatenate([np.bitwise_count(x).sum(axis=1) for x in samples])
    popcount_high = float(np.quantile(popcounts, 0.99))
    d = math.ceil(2 * popcount_high * (1 - threshold))  # differing bits of the design pair
    r_max = min(MAX_BITS, m)
    if m - d < MIN_BITS:
        return NoPlan(f"a pair at the threshold may differ in {d} of {m} informative bits",
                      0.0, recall)  # fmt: skip
    # Unrelated pairs: random rows of two different datasets (all pairs of datasets alike),
    # and on how many informative bits each agrees.
    agree = []
    combos = [(x, y) for x in range(len(samples)) for y in range(x + 1, len(samples))]
    per = max(1, pairs // len(combos))
    for x, y in combos:
        i, j = rng.integers(0, len(samples[x]), per), rng.integers(0, len(samples[y]), per)
        same = ~(samples[x][i] ^ samples[y][j]) & mask
        agree.append(np.bitwise_count(same).sum(axis=1))
    unrelated = _hypergeometric_run(np.concatenate(agree).astype(np.float64), m, r_max)
    design = _hypergeometric_run(np.array([float(m - d)]), m, r_max)[0]
    return _Design(rng, informative, unrelated.mean(axis=0), design, m, r_max)


def _choose(
    found: _Design,
    shapes: Sequence[tuple[int, int]],
    recall: float,
    max_bands: int,
    bits_per_band: int | None,
) -> tuple[int, int, float] | NoPlan:
    """(r, bands, expected comparisons) of least estimated cost for pairs of datasets of
    these sizes compared under one plan, or why none is used."""
    all_pairs = sum(x * y for x, y in shapes)
    all_rows = sum(x + y for x, y in shapes)
    best: tuple[float, int, int, float] | None = None
    best_recall = 0.0
    widths = range(MIN_BITS, found.r_max + 1) if bits_per_band is None else [bits_per_band]
    for r in widths:
        if not 1 <= r <= found.r_max:
            return NoPlan(f"{r} bits a band: the CLKs have {found.m} informative bits",
                          0.0, recall)  # fmt: skip
        hit = float(found.design[r])
        if hit <= 0:
            break
        bands = 1 if hit >= 1 else math.ceil(math.log(1 - recall) / math.log1p(-hit))
        if bands > max_bands:
            best_recall = max(best_recall, 1 - (1 - hit) ** max_bands)
            continue
        comparisons = bands * all_pairs * float(found.unrelated[r])
        cost = bands * all_rows * COST_ROW + comparisons * COST_PAIR
        if best is None or cost < best[0]:
            best = (cost, r, bands, comparisons)
    if best is None:
        return NoPlan(f"the design pair needs more than {max_bands} bands at every band width",
                      best_recall, recall)  # fmt: skip
    cost, r, bands, comparisons = best
    exhaustive = all_pairs * COST_DENSE
    if cost > exhaustive:
        achieved = 1 - (1 - float(found.design[r])) ** bands
        return NoPlan(
            f"its cheapest plan, {bands} bands of {r} bits, would take ~{cost:.3g} CPU s against "
            f"~{exhaustive:.3g} for every pair", achieved, recall
        )  # fmt: skip
    return r, bands, comparisons


def _draw(
    found: _Design, r: int, bands: int, comparisons: float, threshold: float, recall: float
) -> LshPlan:
    """The plan of `bands` bands of r informative bits each (from the planner's rng)."""
    positions = np.stack([found.rng.choice(found.informative, r, replace=False)
                          for _ in range(bands)])  # fmt: skip
    achieved = 1 - (1 - float(found.design[r])) ** bands
    if achieved < recall:  # rounding: never hand out a plan below the target
        raise LshPlanError(f"plan design recall {achieved:.6f} below target {recall}")
    return LshPlan(positions.astype(np.int32), threshold, achieved, comparisons, found.m)


def plan(
    datasets: Sequence[Clks],
    threshold: float,
    *,
    recall: float = TARGET_RECALL,
    sizes: Sequence[int] | None = None,
    max_bands: int = MAX_BANDS,
    seed: int = SEED,
    sample: int = SAMPLE_ROWS,
    pairs: int = SAMPLE_PAIRS,
    bits_per_band: int | None = None,
) -> LshPlan | NoPlan:
    """One plan for every pair of these datasets at `threshold` (see the module
    docstring), or a NoPlan; `plan_pairs` plans each shape of pair on its own.

    `sizes` plans for datasets of other sizes with these datasets' statistics (the
    tests plan 1M x 1M from a small sample); `bits_per_band` fixes r instead of choosing
    it (the number of bands is still what the target recall needs)."""
    sizes = list(sizes) if sizes is not None else [len(d) for d in datasets]
    found = _measure(datasets, sizes, threshold, recall, seed, sample, pairs)
    if isinstance(found, NoPlan):
        return found
    shapes = [(sizes[x], sizes[y]) for x, y in itertools.combinations(range(len(sizes)), 2)]
    chosen = _choose(found, shapes, recall, max_bands, bits_per_band)
    if isinstance(chosen, NoPlan):
        return chosen
    return _draw(found, *chosen, threshold, recall)


@dataclass(frozen=True)
class PairPlans:
    """A run's LSH plans, one per shape of pair (`plan_pairs`): `pairs[(x, y)]` is the
    index in `plans` of the plan datasets x < y are compared under; a pair absent from
    it is compared exhaustively, for the reason `exhaustive[(x, y)]` gives."""

    plans: tuple[LshPlan, ...]
    pairs: dict[tuple[int, int], int]
    exhaustive: dict[tuple[int, int], NoPlan]

    @classmethod
    def single(cls, lsh: LshPlan, count: int) -> PairPlans:
        """Every pair of `count` datasets under one plan."""
        return cls((lsh,), dict.fromkeys(itertools.combinations(range(count), 2), 0), {})

    @property
    def bands(self) -> int:  # the most bands any pair is compared in
        return max((p.bands for p in self.plans), default=0)

    def describe(self) -> list[str]:
        """One line per plan (and one for the pairs compared exhaustively), for the log."""
        used = [sum(1 for k in self.pairs.values() if k == i) for i in range(len(self.plans))]
        lines = [
            f"{counted(n, 'pair')} of members: {p.describe()}"
            for n, p in zip(used, self.plans, strict=True)
        ]
        if self.exhaustive:
            why = next(iter(self.exhaustive.values())).message
            n = len(self.exhaustive)
            lines.append(f"{counted(n, 'pair')} of members: {why}")
        return lines


def plan_pairs(
    datasets: Sequence[Clks],
    threshold: float,
    *,
    recall: float = TARGET_RECALL,
    sizes: Sequence[int] | None = None,
    max_bands: int = MAX_BANDS,
    seed: int = SEED,
) -> PairPlans | NoPlan:
    """A plan for each shape of pair of these datasets: the bands that cost least for
    that pair's two sizes, at the target recall (the statistics of all the datasets
    together, as `plan`). Pairs of the same sizes share a plan; a pair no plan serves
    at the target recall, or more cheaply than comparing every pair, is compared
    exhaustively, that pair only. A NoPlan when no pair has a plan. When every pair
    has the same sizes this is `plan`'s one plan, band for band."""
    sizes = list(sizes) if sizes is not None else [len(d) for d in datasets]
    found = _measure(datasets, sizes, threshold, recall, seed, SAMPLE_ROWS, SAMPLE_PAIRS)
    if isinstance(found, NoPlan):
        return found
    chosen: dict[tuple[int, int], tuple[int, int, float] | NoPlan] = {}
    shape_of: dict[tuple[int, int], tuple[int, int]] = {}
    for x, y in itertools.combinations(range(len(sizes)), 2):
        shape = (min(sizes[x], sizes[y]), max(sizes[x], sizes[y]))
        shape_of[(x, y)] = shape
        if shape not in chosen:
            chosen[shape] = _choose(found, [shape], recall, max_bands, None)
    # One plan for each (r, bands) chosen, drawn in the order pairs first need it.
    drawn: dict[tuple[int, int], int] = {}
    plans: list[LshPlan] = []
    pairs: dict[tuple[int, int], int] = {}
    exhaustive: dict[tuple[int, int], NoPlan] = {}
    expected: dict[tuple[int, int], float] = {}
    for pair, shape in shape_of.items():
        pick = chosen[shape]
        if isinstance(pick, NoPlan):
            exhaustive[pair] = pick
            continue
        r, bands, _ = pick
        expected[(r, bands)] = expected.get((r, bands), 0.0) + pick[2]
        if (r, bands) not in drawn:
            drawn[(r, bands)] = len(plans)
            plans.append(_draw(found, r, bands, 0.0, threshold, recall))
        pairs[pair] = drawn[(r, bands)]
    if not plans:
        return next(iter(exhaustive.values()))
    plans = [
        dataclasses.replace(p, expected_comparisons=expected[(p.bits_per_band, p.bands)])
        for p in plans
    ]
    return PairPlans(tuple(plans), pairs, exhaustive)


def band_keys(clks: Clks, plan: LshPlan) -> npt.NDArray[np.uint32]:
    """(bands, n) keys: bit j of a key is bit positions[band, j] of the CLK."""
    words = np.ascontiguousarray(clks).view(np.uint64)
    pos = plan.positions.astype(np.int64)
    keys = np.empty((plan.bands, len(words)), dtype=np.uint32)
    step = max(1, 4_000_000 // max(1, pos.size))
    for lo in range(0, len(words), step):
        block = words[lo : lo + step]
        sampled = (block[:, pos // 64] >> (pos % 64).astype(np.uint64)) & np.uint64(1)
        weights = np.uint64(1) << np.arange(plan.bits_per_band, dtype=np.uint64)
        keys[:, lo : lo + len(block)] = (sampled * weights).sum(axis=2).T.astype(np.uint32)
    return keys


@dataclass
class BandResult:
    sims: npt.NDArray[np.float64]
    rows_a: npt.NDArray[np.uint32]
    rows_b: npt.NDArray[np.uint32]
    comparisons: int


def collide(
    keys_a: npt.NDArray[np.uint32], keys_b: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows of a sorted by key, with the range of b's key-sorted rows sharing each key.

    Returns (order_a, lo, hi) and b's order is returned by `np.argsort(keys_b)`:
    row order_a[k] of a collides with rows argsort(keys_b)[lo[k]:hi[k]] of b.
    """
    order_a = np.argsort(keys_a, kind="stable")
    sorted_b = np.sort(keys_b)
    ka = keys_a[order_a]
    lo = np.searchsorted(sorted_b, ka, side="left")
    hi = np.searchsorted(sorted_b, ka, side="right")
    return order_a, lo, hi


def compare_band(
    a: Clks,
    b: Clks,
    keys_a: npt.NDArray[np.uint32],
    keys_b: npt.NDArray[np.uint32],
    threshold: float,
) -> BandResult:
    """Pairs that collide in one band and reach the threshold (exact Dice, as anonlink)."""
    order_a, lo, hi = collide(keys_a, keys_b)
    order_b = np.argsort(keys_b, kind="stable")
    counts = hi - lo
    total = int(counts.sum())
    sims_out, ia_out, ib_out = [], [], []
    # Steps of about PAIRS_PER_STEP pairs, cut at row boundaries, bound memory.
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(PAIRS_PER_STEP, total, PAIRS_PER_STEP))
    for rows in np.split(np.arange(len(order_a)), np.unique(cuts)):
        c = counts[rows]
        n = int(c.sum())
        if not n:
            continue
        ia = np.repeat(order_a[rows], c).astype(np.uint32)
        start = np.repeat(lo[rows] - (np.cumsum(c) - c), c) + np.arange(n)
        ib = order_b[start].astype(np.uint32)
        sims, keep = dice_pairs(a, b, ia, ib, threshold)
        sims_out.append(sims)
        ia_out.append(ia[keep])
        ib_out.append(ib[keep])
    if not sims_out:
        u = np.empty(0, dtype=np.uint32)
        return BandResult(np.empty(0), u, u.copy(), total)
    return BandResult(
        np.concatenate(sims_out), np.concatenate(ia_out), np.concatenate(ib_out), total
    )


def compare_bands(
    a: Clks, b: Clks, positions: npt.NDArray[np.int32], threshold: float
) -> BandResult:
    """Pairs colliding in any band of `positions` (a plan's, or some of its rows) that
    reach the threshold, each once (exact Dice, as anonlink); `comparisons` counts every
    collision of every band."""
    positions = np.ascontiguousarray(positions, dtype=np.int32)
    if positions.ndim != 2:
        raise ValueError("positions must be (bands, bits_per_band)")
    words = kernel._words(a, b)
    t = kernel._check_threshold(threshold)
    if not (t > 0):
        raise ValueError("LSH needs a positive threshold (a pair with no bits in common counts)")
    if not len(positions) or not len(a) or not len(b):
        u = np.empty(0, dtype=np.uint32)
        return BandResult(np.empty(0), u, u.copy(), 0)
    if not kernel.NATIVE:
        part = LshPlan(positions, threshold, 0.0)
        keys_a, keys_b = band_keys(a, part), band_keys(b, part)
        results = [compare_band(a, b, keys_a[k], keys_b[k], t) for k in range(len(positions))]
        sims, ia, ib = dedupe(
            np.concatenate([r.sims for r in results]),
            np.concatenate([r.rows_a for r in results]),
            np.concatenate([r.rows_b for r in results]),
        )
        return BandResult(sims, ia, ib, sum(r.comparisons for r in results))
    raw, comparisons = kernel._kernel.lsh_pairs(
        kernel._native_input(a), kernel._native_input(b), words, positions,
        positions.shape[1], t,
    )  # fmt: skip
    sims, ia, ib = kernel._unpack(raw)
    return BandResult(sims, ia, ib, int(comparisons))
