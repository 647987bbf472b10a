"""Comparing CLKs: independent chunks in, candidate pairs out.

A chunk compares a slice of one member's CLKs with a slice of another's. The
functions here are pure (arrays in, arrays out), free of storage and gRPC, so
an executor can run chunks on local threads today and on a distributed engine
later. The similarity kernel is anonlink's `dice_coefficient_accelerated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher._anonlink import dice_coefficient_accelerated, process_chunk, split_to_chunks

# About this many comparisons per chunk: big enough to amortise the call,
# small enough for steady progress reports.
CHUNK_COMPARISONS = 25_000_000


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

    def as_anonlink(self) -> list[dict[str, object]]:
        return [
            {"datasetIndex": self.a, "range": [self.a_start, self.a_stop]},
            {"datasetIndex": self.b, "range": [self.b_start, self.b_stop]},
        ]


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


def _records(clks: npt.NDArray[np.uint8], start: int, stop: int) -> list[bytes]:
    return [row.tobytes() for row in clks[start:stop]]


def compare_chunk(
    chunk: Chunk, datasets: Sequence[npt.NDArray[np.uint8]], threshold: float
) -> Candidates:
    """All pairs in `chunk` with Dice similarity >= `threshold`.

    `datasets[i]` is an (n_i, clk_bytes) uint8 array of dataset i's CLKs.
    """
    a = _records(datasets[chunk.a], chunk.a_start, chunk.a_stop)
    b = _records(datasets[chunk.b], chunk.b_start, chunk.b_stop)
    sims, (d0, d1), (r0, r1) = process_chunk(
        chunk.as_anonlink(), [a, b], dice_coefficient_accelerated, threshold
    )
    return Candidates(
        np.frombuffer(sims, dtype=np.float64).copy(),
        np.frombuffer(d0, dtype=np.uint32).copy(),
        np.frombuffer(d1, dtype=np.uint32).copy(),
        np.frombuffer(r0, dtype=np.uint32).copy(),
        np.frombuffer(r1, dtype=np.uint32).copy(),
    )


def merge(parts: Sequence[Candidates]) -> Candidates:
    """One candidate set, ordered as anonlink's solvers expect.

    Decreasing similarity, ties broken by dataset then row indices, so the
    result is the same however the work was chunked.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return Candidates.empty()
    sims = np.concatenate([p.sims for p in parts])
    d0 = np.concatenate([p.dset0 for p in parts])
    d1 = np.concatenate([p.dset1 for p in parts])
    r0 = np.concatenate([p.rec0 for p in parts])
    r1 = np.concatenate([p.rec1 for p in parts])
    order = np.lexsort((r1, r0, d1, d0, -sims))
    return Candidates(sims[order], d0[order], d1[order], r0[order], r1[order])
