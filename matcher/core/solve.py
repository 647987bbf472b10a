"""Solving: candidate pairs -> groups of records that are one subject -> links.

Uses anonlink's greedy solver, which handles two or more datasets: each group
holds at most one record per dataset. A *link* is one ordered (record, partner
record) pair within a group, with the Dice similarity of the two CLKs; links
are what disclosure works from. `complete` then makes the merges the greedy solver
refused for want of one pair, where the pairs between the two groups still score near
the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core._anonlink import greedy_solve
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.kernel import NATIVE, _kernel

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
    """Greedy 1:1 (multi-party) solving of sorted candidate pairs.

    Two members' candidates, each pair given once, are solved in one native pass
    (`_two_members`); anything else by anonlink's solver. The groups are the same either way;
    their order is not (callers do not depend on it: anonlink's follows its hash map)."""
    if not len(candidates):
        return []
    two = _two_members(candidates)
    if two is not None:
        return two
    groups = greedy_solve(
        (
            candidates.sims,
            (candidates.dset0, candidates.dset1),
            (candidates.rec0, candidates.rec1),
        )
    )
    return [tuple(sorted((int(d), int(r)) for d, r in g)) for g in groups]


def _two_members(candidates: Candidates) -> list[Group] | None:
    """anonlink's greedy solve where every pair joins a record of one member to one of
    another, the same two members throughout, and no pair is given twice; None elsewhere.

    There a pair's two records join exactly when neither is joined yet: anonlink joins two
    groups only when every pair between them is a candidate (its merge threshold 1), and
    between a joined pair and a third record of either member, or between two joined pairs,
    only one or two of the two or four pairs are across members, the others within one
    member, never candidates; a record it holds alone (met a joined record first) is as
    free as one it has not met. A pair given twice is counted twice there and can join a
    third record, hence the check. One pass, linear (anonlink's keeps a count for every pair
    between two groups: lowfloor measured it superlinear at a low floor, docs/performance.md).
    """
    if not NATIVE:
        return None
    d0, d1 = candidates.dset0, candidates.dset1
    lo, hi = int(min(d0.min(), d1.min())), int(max(d0.max(), d1.max()))
    if lo == hi or not (((d0 == lo) & (d1 == hi)) | ((d0 == hi) & (d1 == lo))).all():
        return None
    flip = d0 == hi
    x = np.ascontiguousarray(np.where(flip, candidates.rec1, candidates.rec0), dtype=np.uint32)
    y = np.ascontiguousarray(np.where(flip, candidates.rec0, candidates.rec1), dtype=np.uint32)
    n_x, n_y = int(x.max()) + 1, int(y.max()) + 1
    joined = np.zeros(len(x), dtype=np.uint8)
    chosen = _kernel.greedy_pairs(x, y, n_x, n_y, joined)
    if chosen == -1:
        return None
    if chosen == -2 and len(np.unique(x.astype(np.uint64) * np.uint64(n_y) + y)) < len(x):
        return None
    k = np.flatnonzero(joined)
    return [((lo, a), (hi, b)) for a, b in zip(x[k].tolist(), y[k].tolist(), strict=True)]


# Completing groups (`complete`): a candidate pair at least BRIDGE over the threshold that the
# greedy solver left across two groups joins them when every pair between the two groups
# scores at least REACH under the threshold (chosen on benchmarks/messy.py, reported on
# benchmarks/households.py: docs/evaluation.md, "Completing groups").
BRIDGE = 0.05
REACH = 0.10


def complete(
    groups: Sequence[Group],
    candidates: Candidates,
    score_pairs: PairScorer,
    threshold: float,
    *,
    bridge: float = BRIDGE,
    reach: float = REACH,
) -> list[Group]:
    """`groups` with the merges the greedy solver refused for want of one pair.

    The greedy solver joins two groups only when every pair between them is a candidate at
    the threshold, so a subject held by three members whose records of two of them score
    just under it (a mover without a date of birth, a typo in both names) ends as a pair
    and a record left out: the left-out record loses its hits with both. Here every
    candidate pair at or above `threshold + bridge` whose records ended in different groups
    (or in none), best first, joins their two groups when the groups hold no member twice
    and `score_pairs` gives every pair between them at least `threshold - reach`. Both
    cut-offs are rounded to 6 places, as a two-server run's are (core/twoserver.py), so a
    pair at exactly 0.85 bridges and one at exactly 0.7 reaches at a threshold of 0.8.
    """
    found = np.flatnonzero(candidates.sims >= round(threshold + bridge, 6))
    members = np.union1d(candidates.dset0[found], candidates.dset1[found])
    if len(members) < 3:  # two members' groups are pairs already: nothing can join them
        return list(groups)
    found = found[_across(groups, candidates, found)]
    merged: list[list[tuple[int, int]]] = [list(g) for g in groups]
    where = {record: i for i, g in enumerate(merged) for record in g}
    floor = round(threshold - reach, 6)  # 0.7 at 0.8, not 0.7000000000000001 (as two-server)
    for k in found.tolist():  # candidates are sorted best first
        x = (int(candidates.dset0[k]), int(candidates.rec0[k]))
        y = (int(candidates.dset1[k]), int(candidates.rec1[k]))
        gx, gy = where.get(x), where.get(y)
        if gx is not None and gx == gy:
            continue
        one = merged[gx] if gx is not None else [x]
        other = merged[gy] if gy is not None else [y]
        if {d for d, _ in one} & {d for d, _ in other}:
            continue
        cross = np.array([(a[0], a[1], b[0], b[1]) for a in one for b in other], dtype=np.uint32)
        if score_pairs(cross[:, 0], cross[:, 1], cross[:, 2], cross[:, 3]).min() < floor:
            continue
        if gx is None:
            gx = len(merged)
            merged.append(one)
        one.extend(other)
        if gy is not None:
            merged[gy] = []
        for record in one:
            where[record] = gx
    return [tuple(sorted(g)) for g in merged if len(g) > 1]


def _across(
    groups: Sequence[Group], candidates: Candidates, found: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    """Which of the candidate pairs `found` the solver left across two groups (or outside
    any): the only ones `complete` looks at."""
    if not groups:
        return np.ones(len(found), dtype=bool)
    size = int(max(candidates.rec0.max(initial=0), candidates.rec1.max(initial=0))) + 1
    records = np.array([(d, r, i) for i, g in enumerate(groups) for d, r in g], dtype=np.int64)
    keys = records[:, 0] * size + records[:, 1]
    order = np.argsort(keys)
    keys, ids = keys[order], records[order, 2]

    def group_of(
        dset: npt.NDArray[np.uint32], rec: npt.NDArray[np.uint32]
    ) -> npt.NDArray[np.int64]:
        want = dset.astype(np.int64) * size + rec
        at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.where(keys[at] == want, ids[at], -1)

    gx = group_of(candidates.dset0[found], candidates.rec0[found])
    gy = group_of(candidates.dset1[found], candidates.rec1[found])
    out: npt.NDArray[np.bool_] = (gx != gy) | (gx < 0)
    return out


def dice_scorer(datasets: Sequence[npt.NDArray[np.uint8]]) -> PairScorer:
    """Scores pairs by the Dice similarity of their CLKs in `datasets`."""

    def score(
        d0: UIntArray, r0: UIntArray, d1: UIntArray, r1: UIntArray
    ) -> npt.NDArray[np.float64]:
        out = np.empty(len(d0), dtype=np.float64)
        for a, b, sel in by_datasets(d0, d1):
            out[sel] = dice(datasets[a][r0[sel]], datasets[b][r1[sel]])
        return out

    return score


def by_datasets(d0: UIntArray, d1: UIntArray) -> Iterator[tuple[int, int, npt.NDArray[np.intp]]]:
    """The pairs (positions) of each pair of datasets present, as (dataset, dataset, positions):
    how a scorer gathers rows one dataset pair at a time, in order of (a, b), each one's
    positions ascending. One stable sort of the pairs' (a, b) keys (a radix sort while they
    fit 16 bits), not a pass over all pairs for each (a, b): a run's millions of candidates
    among several datasets (benchmarks/rulescore.py)."""
    if not len(d0):
        return
    width = int(d1.max()) + 1
    key = d0.astype(np.int64) * width + d1
    counts = np.bincount(key)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        yield int(present[0]) // width, int(present[0]) % width, np.arange(len(key))
        return
    order = np.argsort(key.astype(np.uint16) if present[-1] < 1 << 16 else key, kind="stable")
    ends = np.cumsum(counts[present]).tolist()
    for k, lo, hi in zip(present.tolist(), [0, *ends[:-1]], ends, strict=True):
        yield k // width, k % width, order[lo:hi]


def dice(
    a: npt.NDArray[np.unsignedinteger], b: npt.NDArray[np.unsignedinteger]
) -> npt.NDArray[np.float64]:
    """Row-wise Dice similarity of two equally shaped (n, clk_bytes) arrays (or the same bits
    in 64-bit words: core/fallbackindex.py)."""
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
    score = scorer if scorer is not None else dice_scorer(datasets)
    return Links(d0, r0, d1, r1, score(d0, r0, d1, r1))
