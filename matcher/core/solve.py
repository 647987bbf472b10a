"""Solving: candidate pairs -> groups of records that are one subject -> links.

Uses anonlink's greedy solver, which handles two or more datasets: each group
holds at most one record per dataset. A *link* is one ordered (record, partner
record) pair within a group, with the Dice similarity of the two CLKs; links
are what disclosure works from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core._anonlink import greedy_solve
from blindmatch.matcher.core.compare import Candidates

Group = tuple[tuple[int, int], ...]
UIntArray = npt.NDArray[np.uint32]
# Scores pairs (dset, rows, partner dset, partner rows) -> scores; Dice when not given.
PairScorer = Callable[[UIntArray, UIntArray, UIntArray, UIntArray], npt.NDArray[np.float64]]


@dataclass
class Links:
    """Ordered pairs (dset, row) -> (partner dset, partner row) with their similarity."""

    dset: npt.NDArray[np.uint32]
    row: npt.NDArray[np.uint32]
    partner: npt.NDArray[np.uint32]
    partner_row: npt.NDArray[np.uint32]
    score: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.score)


def solve(candidates: Candidates) -> list[Group]:
    """Greedy 1:1 (multi-party) solving of sorted candidate pairs."""
    if not len(candidates):
        return []
    groups = greedy_solve(
        (
            candidates.sims,
            (candidates.dset0, candidates.dset1),
            (candidates.rec0, candidates.rec1),
        )
    )
    return [tuple(sorted((int(d), int(r)) for d, r in g)) for g in groups]


def dice(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Row-wise Dice similarity of two equally shaped (n, clk_bytes) arrays."""
    both = np.bitwise_count(a & b).sum(axis=1, dtype=np.int64)
    total = np.bitwise_count(a).sum(axis=1, dtype=np.int64) + np.bitwise_count(b).sum(
        axis=1, dtype=np.int64
    )
    out = np.zeros(len(a), dtype=np.float64)
    np.divide(2.0 * both, total, out=out, where=total > 0)
    return out


def links_from_groups(
    groups: Sequence[Group],
    datasets: Sequence[npt.NDArray[np.uint8]],
    scorer: PairScorer | None = None,
) -> Links:
    """Both directions of every pair inside every group, scored by Dice (or `scorer`)."""
    dset_parts, row_parts, partner_parts, prow_parts = [], [], [], []
    by_size: dict[int, list[Group]] = {}
    for g in groups:
        by_size.setdefault(len(g), []).append(g)
    for size, same in by_size.items():
        arr = np.asarray(same, dtype=np.uint32)  # (groups, size, 2): (dset, row)
        for x in range(size):
            for y in range(size):
                if x == y:
                    continue
                keep = arr[:, x, 0] != arr[:, y, 0]
                dset_parts.append(arr[keep, x, 0])
                row_parts.append(arr[keep, x, 1])
                partner_parts.append(arr[keep, y, 0])
                prow_parts.append(arr[keep, y, 1])
    if not dset_parts:
        u = np.empty(0, dtype=np.uint32)
        return Links(u, u.copy(), u.copy(), u.copy(), np.empty(0, dtype=np.float64))
    d0, r0 = np.concatenate(dset_parts), np.concatenate(row_parts)
    d1, r1 = np.concatenate(partner_parts), np.concatenate(prow_parts)
    order = np.lexsort((r1, d1, r0, d0))
    d0, r0, d1, r1 = d0[order], r0[order], d1[order], r1[order]
    if scorer is not None:
        return Links(d0, r0, d1, r1, scorer(d0, r0, d1, r1))
    scores = np.empty(len(d0), dtype=np.float64)
    for a in np.unique(d0):
        for b in np.unique(d1):
            sel = np.flatnonzero((d0 == a) & (d1 == b))
            if len(sel):
                scores[sel] = dice(datasets[a][r0[sel]], datasets[b][r1[sel]])
    return Links(d0, r0, d1, r1, scores)
