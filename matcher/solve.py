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

from matcher._anonlink import greedy_solve
from matcher.compare import Candidates

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
    pairs = [(d0, r0, d1, r1) for g in groups for d0, r0 in g for d1, r1 in g if d0 != d1]
    if not pairs:
        u = np.empty(0, dtype=np.uint32)
        return Links(u, u.copy(), u.copy(), u.copy(), np.empty(0, dtype=np.float64))
    arr = np.asarray(pairs, dtype=np.uint32)
    if scorer is not None:
        scores = scorer(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
        return Links(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy(), scores)
    scores = np.empty(len(arr), dtype=np.float64)
    for d0 in np.unique(arr[:, 0]):
        for d1 in np.unique(arr[:, 2]):
            sel = (arr[:, 0] == d0) & (arr[:, 2] == d1)
            if sel.any():
                scores[sel] = dice(datasets[d0][arr[sel, 1]], datasets[d1][arr[sel, 3]])
    return Links(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy(), scores)
