"""Blocking: candidate pairs without comparing all pairs, by LSH on the CLK bits.

Bit-sampling locality-sensitive hashing for Hamming distance: a *band* is a
fixed random choice of `bits_per_band` bit positions, and a record's key in the
band is the value of those bits. Two CLKs collide in a band when they agree on
every sampled bit, which happens with probability (1 - h)^r for a pair that
differs in a fraction h of its bits. True matches (Dice ~0.9) differ in ~10% of
bits, different people in ~45%, so with r = 20 bits a match collides in a band
~10% of the time and a non-match ~1e-6 of the time; a pair becomes a candidate
when it collides in any of `bands` bands, and every candidate is then decided
by the exact Dice kernel. Blocking only ever drops pairs, never adds a score.

The matcher computes the bands itself from a public seed: members need no extra
secret and upload nothing extra. `plan` picks r and the number of bands from
the data (bit frequencies and the threshold) so that a pair at the threshold
plus `margin` is found with probability `recall`.

Everything here is pure: arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.kernel import dice_pairs

Clks = npt.NDArray[np.uint8]

SEED = 0x626D_6C73  # public: the bands are not a secret, the CLKs are
MAX_BANDS = 160
ROW_BLOCK = 16_384  # rows per step when computing keys
PAIRS_PER_STEP = 4_000_000  # candidate pairs generated (and decided) at a time


@dataclass(frozen=True)
class LshPlan:
    """Which bits each band samples: positions[band] holds `bits_per_band` positions."""

    positions: npt.NDArray[np.int64]  # (bands, bits_per_band)
    design_dice: float  # pairs at this Dice are found with probability `design_recall`
    design_recall: float

    @property
    def bands(self) -> int:
        return int(self.positions.shape[0])

    @property
    def bits_per_band(self) -> int:
        return int(self.positions.shape[1])


def plan(
    datasets: Sequence[Clks],
    threshold: float,
    *,
    recall: float = 0.999,
    margin: float = 0.03,
    seed: int = SEED,
    sample: int = 20_000,
) -> LshPlan:
    """Bands for these datasets: r from how often unrelated CLKs agree on a bit, L for recall.

    r is chosen so that in each band about as many unrelated pairs collide as
    there are records (n_a·n_b·q^r ≈ n_a + n_b, q the chance that two unrelated
    CLKs agree on a bit); L so that a pair at Dice `threshold + margin` (popcounts
    at the mean) collides in at least one band with probability `recall`.
    """
    rng = np.random.default_rng(seed)
    bits = datasets[0].shape[1] * 8
    sizes = [len(d) for d in datasets]
    freq = [
        np.unpackbits(d[rng.integers(0, len(d), min(sample, len(d)))], axis=1).mean(axis=0)
        for d in datasets
        if len(d)
    ]
    if len(freq) < 2:
        freq = freq * 2 or [np.full(bits, 0.5)] * 2
    p, s = freq[0], freq[1]
    q = float(np.mean(p * s + (1 - p) * (1 - s)))  # unrelated CLKs agree on a bit
    big = sorted(sizes)[-2:]
    pairs = max(big[0] * big[1], 1)
    target = max(sum(big), 1)
    r = int(np.clip(math.ceil(math.log(target / pairs) / math.log(min(q, 0.99))), 8, 32))
    design = min(1.0, threshold + margin)
    density = float(np.mean(freq[0]))
    h = min(0.5, 2 * density * (1 - design))  # bits differing at Dice `design`
    hit = (1 - h) ** r
    bands = math.ceil(math.log(1 - recall) / math.log1p(-hit)) if hit < 1 else 1
    bands = int(np.clip(bands, 1, MAX_BANDS))
    positions = np.stack([rng.choice(bits, r, replace=False) for _ in range(bands)])
    achieved = 1 - (1 - hit) ** bands
    return LshPlan(positions, design, achieved)


def band_keys(clks: Clks, plan: LshPlan) -> npt.NDArray[np.uint32]:
    """(bands, n) keys: the sampled bits of each CLK in each band, packed."""
    n = len(clks)
    r = plan.bits_per_band
    flat = plan.positions.ravel()
    byte, shift = flat // 8, 7 - flat % 8
    weights = (np.uint32(1) << np.arange(r, dtype=np.uint32)).astype(np.uint32)
    keys = np.empty((plan.bands, n), dtype=np.uint32)
    for lo in range(0, n, ROW_BLOCK):
        block = np.asarray(clks[lo : lo + ROW_BLOCK])
        sampled = (block[:, byte] >> shift.astype(np.uint8)) & 1  # (m, bands * r)
        sampled = sampled.reshape(len(block), plan.bands, r).astype(np.uint32)
        keys[:, lo : lo + len(block)] = (sampled * weights).sum(axis=2, dtype=np.uint32).T
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


def dedupe(
    sims: npt.NDArray[np.float64], rows_a: npt.NDArray[np.uint32], rows_b: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Each pair once (a pair colliding in several bands is found several times)."""
    key = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
    _, first = np.unique(key, return_index=True)
    return sims[first], rows_a[first], rows_b[first]
