"""Index segments in memory, and the one-vs-many similarity search over them.

`search` is the whole similarity kernel of a real-time query: a pure function over
arrays, kept small so that a faster implementation (a C kernel, say) can replace it
without touching anything else. Its contract:

    clks       (n, w) uint64, each row one CLK of w*64 bits, rows ordered by popcount
    popcounts  (n,)   int32, ascending: the popcount of each row
    query      (w,)   uint64, one CLK
    threshold  Dice similarity in (0, 1]

and it returns the positions of the rows whose Dice similarity with the query is at
least `threshold`, with those similarities, best first. Because Dice(a, b) is at most
2*min(|a|, |b|) / (|a| + |b|), only the rows whose popcount lies in a range around the
query's can reach the threshold; rows are kept sorted by popcount so that range is one
slice and everything outside it is skipped.

With the native kernel built, `search` is one pass of `_kernel.c`'s `scan`
(AVX-512 where the CPU has it) over that slice, with anonlink's exact test; numpy does
the same work, more slowly, where the extension did not build.

A `Segment` is a block of CLKs sorted by popcount. One of `lshindex.MIN_ROWS` rows or more
(an index's main segment) also carries an `LshTable` (lshindex.py), its bands planned from
its own rows for the project's threshold (rtplan.py): a query then decides only the rows
that share a (probed) band key with it instead of scanning them all. When no plan reaches
the design recall (rtplan.RECALL) within the memory cap, the segment has no tables and is
scanned in full, and the log says so: a slower answer, never a silently missed match.

A `Snapshot` is what a query reads of one member's index (index.py builds them): a main
segment, a small delta of recent puts (always scanned) and the main rows removed since;
dead rows are dropped from what either finds. `search_batch` answers many queries against
many snapshots with the LSH look-ups of all of them in one native call (the queries that
arrive together: matcher/realtime/lookups.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import hugepages, kernel, rtplan
from blindmatch.matcher.core.lshindex import MIN_ROWS, LshTable, search_many

log = logging.getLogger("blindmatch.matcher.index")

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
Hits = list[tuple[str, float]]

# Rows scanned per step: small enough that the temporaries stay in cache.
SCAN_ROWS = 16_384
# Look-ups of its own rows a starting matcher runs over each project's tables (warm_up).
WARM_UP_LOOKUPS = 2_000


def as_words(clks: npt.NDArray[np.uint8] | bytes, clk_bits: int) -> U64:
    """CLK bytes, (n, clk_bits/8) or flat, as an (n, clk_bits/64) uint64 array (a copy)."""
    raw = np.frombuffer(bytes(clks), dtype=np.uint8) if isinstance(clks, bytes) else clks
    return np.ascontiguousarray(raw).reshape(-1, clk_bits // 8).view(np.uint64).copy()


def popcounts_of(words: U64) -> I32:
    """The number of set bits in each row."""
    return np.bitwise_count(words).sum(axis=1, dtype=np.int32)


def popcount_range(popcount: int, threshold: float) -> tuple[int, int]:
    """The popcounts a row needs for Dice >= threshold with a CLK of `popcount` bits set.

    From Dice <= 2*min(pa, pb)/(pa + pb); widened by one at each end against rounding.
    """
    low = math.floor(popcount * threshold / (2.0 - threshold)) - 1
    high = math.ceil(popcount * (2.0 - threshold) / threshold) + 1
    return max(low, 1), high


_LOW_BYTES = np.uint64(0x00FF00FF00FF00FF)
_ADD_LANES = np.uint64(0x0001000100010001)


def _row_sums(counts: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Each row's sum of per-word popcounts (each at most 64).

    Eight byte-sized counts at a time, as one uint64: add neighbouring bytes into 16-bit
    lanes, then all four lanes with one multiply; faster than .sum(axis=1).
    """
    words = counts.shape[1]
    if words % 8:
        return counts.sum(axis=1, dtype=np.int64)
    x = counts.view(np.uint64)
    x = (x & _LOW_BYTES) + ((x >> np.uint64(8)) & _LOW_BYTES)
    x = (x * _ADD_LANES) >> np.uint64(48)
    total = x[:, 0].copy()
    for j in range(1, x.shape[1]):
        total += x[:, j]
    return total.astype(np.int64)


def search(
    clks: U64, popcounts: I32, query: U64, threshold: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Rows of `clks` with Dice(row, query) >= threshold, and their scores, best first."""
    query_popcount = int(np.bitwise_count(query).sum())
    if query_popcount == 0 or len(clks) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    low, high = popcount_range(query_popcount, threshold)
    start = int(np.searchsorted(popcounts, low, side="left"))
    stop = int(np.searchsorted(popcounts, high, side="right"))
    if kernel.NATIVE and threshold > 0:
        sims, found = kernel._kernel.scan(
            clks[start:stop], clks.shape[1], popcounts[start:stop], query, float(threshold)
        )
        return _best_first(
            np.frombuffer(found, dtype=np.uint32).astype(np.int64) + start,
            np.frombuffer(sims, dtype=np.float64),
        )
    rows: list[npt.NDArray[np.int64]] = []
    scores: list[npt.NDArray[np.float64]] = []
    step = min(SCAN_ROWS, max(stop - start, 1))
    anded = np.empty((step, clks.shape[1]), dtype=np.uint64)
    counts = np.empty((step, clks.shape[1]), dtype=np.uint8)
    for s in range(start, stop, step):
        e = min(s + step, stop)
        m = e - s
        np.bitwise_and(clks[s:e], query, out=anded[:m])
        np.bitwise_count(anded[:m], out=counts[:m])
        both = _row_sums(counts[:m])
        total = popcounts[s:e] + query_popcount
        # Cheap integer-ish screen first; exact float Dice only for the few survivors.
        near = np.flatnonzero(2.0 * both >= threshold * total - 1e-9)
        if len(near):
            dice = 2.0 * both[near] / total[near]
            keep = dice >= threshold
            rows.append(near[keep].astype(np.int64) + s)
            scores.append(dice[keep])
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    return _best_first(np.concatenate(rows), np.concatenate(scores))


def _best_first(
    found: npt.NDArray[np.int64], sims: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    if len(found) <= 1:
        return found, sims
    order = np.lexsort((found, -sims))
    return found[order], sims[order]


def plan_for(words: U64, popcounts: I32, threshold: float) -> rtplan.Planned | None:
    """LSH bands (and the sketch's stats) for a segment of these rows at this threshold;
    None for a segment too small to need them. A `Planned` without a plan means scan it:
    no plan reaches the design recall, and the log says why."""
    if len(words) < MIN_ROWS or not 0 < threshold <= 1:
        return None
    planned = rtplan.plan(words, popcounts, threshold)
    if planned.plan is None:
        log.warning(
            "no LSH plan for an index of %d rows at threshold %g finds pairs at the "
            "threshold with chance %g (%s): it is scanned in full, exact and slower",
            len(words),
            threshold,
            rtplan.RECALL,
            planned.reason,
        )
    return planned


@dataclass(frozen=True)
class Segment:
    """CLKs sorted by popcount, with the ref of each row (and LSH tables, when large)."""

    words: U64
    popcounts: I32
    refs: tuple[str, ...]
    lsh: LshTable | None = None
    lsh_threshold: float = 1.0  # the tables find pairs at this threshold or above

    @classmethod
    def build(cls, words: U64, refs: Sequence[str], *, threshold: float | None = None) -> Segment:
        """Sorted by popcount; with LSH tables for `threshold` when it is given and large."""
        popcounts = popcounts_of(words)
        order = np.argsort(popcounts, kind="stable")
        sorted_words = hugepages.empty(words.shape, np.uint64)
        np.take(words, order, axis=0, out=sorted_words)
        words = sorted_words
        popcounts = np.ascontiguousarray(popcounts[order])
        planned = plan_for(words, popcounts, threshold) if threshold is not None else None
        lsh_plan = planned.plan if planned is not None else None
        table = None
        if planned is not None and lsh_plan is not None:
            started = time.perf_counter()
            t = float(threshold or 0.0)
            sketch = rtplan.sketch_plan(planned.stats, t, int(popcounts[-1]))
            table = LshTable.build(words, lsh_plan, t, sketch)
            log.info(
                "LSH tables for %d rows in %.2f s, %.0f MiB: %s",
                len(words),
                time.perf_counter() - started,
                table.nbytes / 2**20,
                lsh_plan.describe(),
            )
        return cls(
            words,
            popcounts,
            tuple(refs[i] for i in order),
            table,
            threshold if table is not None and threshold is not None else 1.0,
        )

    def search(
        self, query: U64, threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Rows with Dice >= threshold and their scores, unordered: by LSH where it can."""
        if self.lsh is not None and threshold >= self.lsh_threshold:
            rows, sims, _ = self.lsh.search(self.words, self.popcounts, query, threshold)
            return rows, sims
        return search(self.words, self.popcounts, query, threshold)

    @classmethod
    def empty(cls, words_per_clk: int) -> Segment:
        return cls(np.empty((0, words_per_clk), dtype=np.uint64), np.empty(0, dtype=np.int32), ())

    def __len__(self) -> int:
        return len(self.refs)


@dataclass(frozen=True)
class Snapshot:
    """What a query reads: immutable, swapped whole by the writer."""

    main: Segment
    delta: Segment
    dead: frozenset[int]  # main rows removed or replaced since main was built
    size: int

    def search(self, query: U64, threshold: float) -> list[tuple[str, float]]:
        """(ref, score) of every live record with Dice >= threshold, best first."""
        return self._hits(self.main.search(query, threshold), query, threshold)

    def _hits(
        self,
        main_found: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
        query: U64,
        threshold: float,
    ) -> list[tuple[str, float]]:
        """`search`, given what the main segment's search found."""
        found: list[tuple[str, float]] = []
        rows, scores = main_found
        if len(rows):
            refs, dead = self.main.refs, self.dead
            found.extend(
                (refs[r], s)
                for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
                if r not in dead
            )
        if len(self.delta):
            rows, scores = search(self.delta.words, self.delta.popcounts, query, threshold)
            refs = self.delta.refs
            found.extend((refs[r], s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True))
        if len(found) > 1:
            found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found


def search_snapshots(
    snapshots: Mapping[str, Snapshot], query: U64, threshold: float
) -> dict[str, Hits]:
    """`Snapshot.search` on each (every partner's index, say), with the look-ups of the
    main segments that have prepared tables for this threshold in one native call."""
    tabled = _tabled(snapshots, threshold)
    batched = search_many(list(tabled.values()), query, threshold) if len(tabled) > 1 else None
    main_found = dict(zip(tabled, batched or (), strict=False))
    return {
        name: snap._hits(main_found[name], query, threshold)
        if name in main_found
        else snap.search(query, threshold)
        for name, snap in snapshots.items()
    }


def warm_up(
    snapshots: Mapping[str, Snapshot], threshold: float, lookups: int = WARM_UP_LOOKUPS
) -> int:
    """Search `lookups` of the indexes' own rows as a query would, and drop the answers.

    A freshly started process answers its first look-ups slowly, for about its first
    WARM_UP_LOOKUPS (docs/performance.md, *Start-up warm-up*, has the figures): part of it
    is the garbage collector's first full pass; the rest is the process, not the tables'
    memory: a segment built later (a merge) answers at full speed at once. No page faults;
    the cause of the rest is not pinned down. A matcher runs these before it listens, so
    its first real queries do not pay that. Not a query: nothing is logged or counted.
    Returns how many look-ups ran (0 when no index here has tables).
    """
    tabled = [
        snap.main
        for snap in snapshots.values()
        if snap.main.lsh is not None and snap.main.lsh.prepared is not None
    ]
    if not tabled:
        return 0
    rng = np.random.default_rng(0)
    for k in range(lookups):
        main = tabled[k % len(tabled)]
        search_snapshots(snapshots, main.words[int(rng.integers(len(main)))], threshold)
    return lookups


def search_batch(
    asks: Sequence[tuple[Mapping[str, Snapshot], U64, float]],
) -> list[list[dict[str, Hits]]]:
    """For each (snapshots, queries, threshold): `search_snapshots` of each query row.

    The LSH look-ups of every query of every ask go to the native kernel in one call
    (`lsh_query_batch`: one GIL release and one hand-over to the look-up pool for all);
    scans (segments without prepared tables, deltas) and the dead-row filter run here."""
    items: list[tuple[tuple[object, ...], bytes, float, tuple[int, ...]]] = []
    where: list[tuple[int, list[str]]] = []  # (ask, tabled names) per item
    for k, (snapshots, queries, threshold) in enumerate(asks):
        tabled = _tabled(snapshots, threshold)
        if not tabled or not kernel.NATIVE:
            continue
        names = list(tabled)
        for q in queries:
            items.append(
                (
                    tuple(tabled[n].prepared for n in names),
                    np.ascontiguousarray(q).tobytes(),
                    float(threshold),
                    tuple(tabled[n]._cut(q, threshold) for n in names),
                )
            )
            where.append((k, names))
    answers = kernel._kernel.lsh_query_batch(items) if items else []
    found: list[list[dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]]] = [
        [{} for _ in queries] for _, queries, _ in asks
    ]
    seen = [0] * len(asks)
    for (k, names), answer in zip(where, answers, strict=True):
        found[k][seen[k]] = {
            name: (
                np.frombuffer(rows, dtype=np.uint32).astype(np.int64),
                np.frombuffer(sims, dtype=np.float64),
            )
            for name, (sims, rows, _, _) in zip(names, answer, strict=True)
        }
        seen[k] += 1
    return [
        [
            {
                name: snap._hits(main[name], q, threshold)
                if name in main
                else snap.search(q, threshold)
                for name, snap in snapshots.items()
            }
            for q, main in zip(queries, found[k], strict=True)
        ]
        for k, (snapshots, queries, threshold) in enumerate(asks)
    ]


def _tabled(snapshots: Mapping[str, Snapshot], threshold: float) -> dict[str, LshTable]:
    """The snapshots whose main segments have prepared tables for this threshold."""
    return {
        name: snap.main.lsh
        for name, snap in snapshots.items()
        if snap.main.lsh is not None
        and snap.main.lsh.prepared is not None
        and threshold >= snap.main.lsh_threshold
    }
