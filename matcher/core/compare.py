"""Comparing CLKs: independent chunks in, candidate pairs out.

A chunk compares a slice of one member's CLKs with a slice of another's. The
functions here are pure (arrays in, arrays out), free of storage and gRPC, so
an executor can run chunks on local threads today and on a distributed engine
later. The similarity kernel is `core.kernel` (native, AVX-512 where the CPU
has it), which finds exactly the pairs and scores anonlink's
`dice_coefficient_accelerated` finds, several times faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core._anonlink import split_to_chunks
from blindmatch.matcher.core.kernel import NATIVE, _kernel, dice_candidates

# About this many comparisons per chunk: big enough to amortise the call (the
# kernel sorts and re-lays out both slices), small enough for steady progress
# reports (docs/performance.md times one).
CHUNK_COMPARISONS = 200_000_000


@dataclass(frozen=True)
class Chunk:
    """Rows [a_start, a_stop) of dataset `a` against rows [b_start, b_stop) of `b`."""

    a: int
    a_start: int
    a_stop: int
    b: int
    b_start: int
    b_stop: int

    @property
    def comparisons(self) -> int:
        return (self.a_stop - self.a_start) * (self.b_stop - self.b_start)


@dataclass
class Candidates:
    """Candidate pairs: similarity, (dataset, dataset), (row, row), one entry per pair."""

    sims: npt.NDArray[np.float64]
    dset0: npt.NDArray[np.uint32]
    dset1: npt.NDArray[np.uint32]
    rec0: npt.NDArray[np.uint32]
    rec1: npt.NDArray[np.uint32]

    def __len__(self) -> int:
        return len(self.sims)

    @classmethod
    def empty(cls) -> Candidates:
        u = np.empty(0, dtype=np.uint32)
        return cls(np.empty(0, dtype=np.float64), u, u.copy(), u.copy(), u.copy())


def plan_chunks(sizes: Sequence[int], chunk_comparisons: int = CHUNK_COMPARISONS) -> list[Chunk]:
    """Split every pair of datasets into chunks of about `chunk_comparisons` each."""
    chunks = []
    for info in split_to_chunks(chunk_comparisons, dataset_sizes=list(sizes)):
        (a, (a0, a1)), (b, (b0, b1)) = ((d["datasetIndex"], d["range"]) for d in info)
        chunks.append(Chunk(a, a0, a1, b, b0, b1))
    return chunks


def compare_chunk(
    chunk: Chunk, datasets: Sequence[npt.NDArray[np.uint8]], threshold: float
) -> Candidates:
    """All pairs in `chunk` with Dice similarity >= `threshold`.

    `datasets[i]` is an (n_i, clk_bytes) uint8 array of dataset i's CLKs.
    """
    a = datasets[chunk.a][chunk.a_start : chunk.a_stop]
    b = datasets[chunk.b][chunk.b_start : chunk.b_stop]
    return compare_slices(chunk, a, b, threshold)


def compare_slices(
    chunk: Chunk, a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], threshold: float
) -> Candidates:
    """`compare_chunk` given the chunk's rows themselves: `a` and `b` are its two slices."""
    sims, ia, ib = dice_candidates(a, b, threshold)
    n = len(sims)
    return Candidates(
        sims.copy(),
        np.full(n, chunk.a, dtype=np.uint32),
        np.full(n, chunk.b, dtype=np.uint32),
        ia + np.uint32(chunk.a_start),
        ib + np.uint32(chunk.b_start),
    )


def concat(parts: Sequence[Candidates]) -> Candidates:
    """The parts' candidates as one set, unordered: what a filter whose result does not
    depend on order (core.crowd) reads before `merge` sorts what it keeps."""
    parts = [p for p in parts if len(p)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Candidates.empty()
    return Candidates(
        np.concatenate([p.sims for p in parts]),
        np.concatenate([p.dset0 for p in parts]),
        np.concatenate([p.dset1 for p in parts]),
        np.concatenate([p.rec0 for p in parts]),
        np.concatenate([p.rec1 for p in parts]),
    )


def merge(parts: Sequence[Candidates]) -> Candidates:
    """One candidate set, ordered as anonlink's solvers expect.

    Decreasing similarity, ties broken by dataset then row indices, so the
    result is the same however the work was chunked.
    """
    whole = concat(parts)
    sims, d0, d1, r0, r1 = whole.sims, whole.dset0, whole.dset1, whole.rec0, whole.rec1
    if not len(sims):
        return whole
    packed = _packed(d0, d1, r0, r1)
    one = None if packed is None else _one_sorted(sims, *packed)
    if one is not None:  # the index columns read back from the sorted key (crowdcut)
        columns = (d0, d1, r0, r1)
        widths = [int(c.max(initial=0)).bit_length() for c in columns]
        shift = sum(widths)
        back = []
        for column, width in zip(columns, widths, strict=True):
            shift -= width
            mask = np.uint64((1 << width) - 1)
            back.append(((one[2] >> np.uint64(shift)) & mask).astype(column.dtype))
        return Candidates(one[1], *back)
    order = None
    if packed is not None:  # the index keys as one, then stably by score
        order = sort_u64(packed[0])[0]
        order = order[np.argsort(-sims[order], kind="stable")]
    if order is None:
        order = np.lexsort((r1, r0, d1, d0, -sims))
    return Candidates(sims[order], d0[order], d1[order], r0[order], r1[order])


def _one_sort(
    sims: npt.NDArray[np.float64], key: npt.NDArray[np.uint64], bits: int
) -> npt.NDArray[np.intp] | None:
    """`_one_sorted`'s order, or None."""
    one = _one_sorted(sims, key, bits)
    return None if one is None else one[0]


def _one_sorted(
    sims: npt.NDArray[np.float64], key: npt.NDArray[np.uint64], bits: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.uint64]] | None:
    """The merge's order by one sort (lowfloor): each score's rank on a scale of the bits the
    index key leaves free (a monotone map: a higher score never gets a higher rank number),
    above the key. The order is the merge's exactly when the scores come out non-increasing
    (two rows in order either score apart or tie, and then the key orders them); where two
    scores shared a step of the scale and came out the wrong way round, None. Else (the order,
    the scores in it, the sorted key). The sort is `sort_u64`'s (crowdcut): stable where
    np.argsort is not, which changes nothing (two rows with equal keys are the same pair at the
    same rank: the same bytes where their scores tie, and where they do not, the check above)."""
    free = min(64 - bits, 52)
    lo, hi = float(sims.min()), float(sims.max())
    if free < 16 or not np.isfinite(lo) or not np.isfinite(hi):
        return None
    scale = ((1 << free) - 2) / (hi - lo) if hi > lo else 0.0
    rank = ((hi - sims) * scale).astype(np.uint64)
    order, combined = sort_u64((rank << np.uint64(bits)) | key)
    ordered = sims[order]
    return None if (ordered[1:] > ordered[:-1]).any() else (order, ordered, combined)


def sort_u64(
    key: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint64]]:
    """(the order sorting `key`, `key` in it). The native radix sort (`_radix.c`, crowdcut):
    equal keys in their first order, `key` sorted in place (pass a scratch array); without the
    native module np.argsort (not stable: equal keys in any order, which `merge` allows)."""
    if not NATIVE or len(key) < 2:
        order = np.argsort(key)
        return order, key[order]
    key = np.ascontiguousarray(key, dtype=np.uint64)
    order = np.empty(len(key), dtype=np.int64)
    _kernel.radix_order(key, order)
    return order.astype(np.intp, copy=False), key


def _packed(*columns: npt.NDArray[np.uint32]) -> tuple[npt.NDArray[np.uint64], int] | None:
    """The columns as one uint64 key ordered as they are lexicographically (the first
    most significant) and the bits it takes, or None when their values need more than 64 bits
    together. Rows with equal keys are equal in every column, so an unstable sort is safe."""
    widths = [int(c.max(initial=0)).bit_length() for c in columns]
    if sum(widths) > 64:
        return None
    key = np.zeros(len(columns[0]), dtype=np.uint64)
    for column, width in zip(columns, widths, strict=True):
        key <<= np.uint64(width)
        key |= column.astype(np.uint64)
    return key, sum(widths)
