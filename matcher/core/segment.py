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
from dataclasses import dataclass, field

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
# Segments one native look-up takes at most (_kernel.c, MAX_MANY).
MAX_NATIVE = 256


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
    # The native kernel's grip on words and popcounts for a full scan (`scan_prepare`), so
    # that `search_batch` scans the segment in the same native pass as the look-ups;
    # None without the kernel or rows.
    scanner: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scanner is None and kernel.NATIVE and len(self.words) and self._scannable():
            scanner = kernel._kernel.scan_prepare(self.words, self.words.shape[1], self.popcounts)
            object.__setattr__(self, "scanner", scanner)

    def _scannable(self) -> bool:
        w = self.words
        return (
            w.dtype == np.uint64
            and w.flags.c_contiguous
            and self.popcounts.dtype == np.int32
            and self.popcounts.flags.c_contiguous
        )

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
        delta_found: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None,
    ) -> list[tuple[str, float]]:
        """`search`, given what the main segment's search found (and the delta's, when
        scanned already)."""
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
            rows, scores = delta_found or search(
                self.delta.words, self.delta.popcounts, query, threshold
            )
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

    Every query's look-ups and scans go to the native kernel in one call
    (`lsh_query_batch`: one GIL release and one hand-over to the look-up pool for all):
    each snapshot's main segment by its LSH tables when it has tables for the threshold,
    else by a full scan (`Segment.scanner`), and its delta by a scan. Only the dead-row
    filter and the refs are left to Python. Without the native kernel each is searched
    here, one by one."""
    if not kernel.NATIVE:
        return [
            [{name: snap.search(q, threshold) for name, snap in snapshots.items()} for q in queries]
            for snapshots, queries, threshold in asks
        ]
    items: list[tuple[tuple[object, ...], bytes, float, tuple[int, ...]]] = []
    # Per ask: each snapshot's (name, where its main's answer is in an item's answer,
    # where its delta's is, or -1: no rows), and the native items' capsules and cuts.
    plans: list[list[tuple[str, Snapshot, int, int]]] = []
    for snapshots, queries, threshold in asks:
        capsules: list[object] = []
        tabled: list[LshTable | None] = []
        layout: list[tuple[str, Snapshot, int, int]] = []
        for name, snap in snapshots.items():
            main, delta = snap.main, snap.delta
            lsh = main.lsh
            at_main = at_delta = -1
            if lsh is not None and lsh.prepared is not None and threshold >= main.lsh_threshold:
                at_main = len(capsules)
                capsules.append(lsh.prepared)
                tabled.append(lsh)
            elif main.scanner is not None:
                at_main = len(capsules)
                capsules.append(main.scanner)
                tabled.append(None)
            if delta.scanner is not None:
                at_delta = len(capsules)
                capsules.append(delta.scanner)
                tabled.append(None)
            layout.append((name, snap, at_main, at_delta))
        if len(capsules) > MAX_NATIVE:  # more than one native call takes: here, one by one
            layout = [(name, snap, -1, -1) for name, snap, _, _ in layout]
            capsules = []
        plans.append(layout)
        if not capsules or not len(queries):
            continue
        caps = tuple(capsules)
        t = float(threshold)
        if all(x is None or threshold >= x.threshold for x in tabled):
            # Every table's own sketch cut holds (the usual case): all the rows in one item.
            cuts = (-1,) * len(caps)
            items.append((caps, np.ascontiguousarray(queries).tobytes(), t, cuts))
        else:
            for q in queries:
                cuts = tuple(-1 if x is None else x._cut(q, threshold) for x in tabled)
                items.append((caps, np.ascontiguousarray(q).tobytes(), t, cuts))
    answers = iter(kernel._kernel.lsh_query_batch(items) if items else ())
    out: list[list[dict[str, Hits]]] = []
    for (_, queries, threshold), layout in zip(asks, plans, strict=True):
        per_query: list[dict[str, Hits]] = []
        native = any(at_main >= 0 or at_delta >= 0 for _, _, at_main, at_delta in layout)
        for q in queries:
            answer = next(answers) if native else []
            hits: dict[str, Hits] = {}
            for name, snap, at_main, at_delta in layout:
                if at_main < 0:
                    main_found = snap.main.search(q, threshold)
                else:
                    main_found = _found(answer[at_main])
                delta_found = _found(answer[at_delta]) if at_delta >= 0 else None
                hits[name] = snap._hits(main_found, q, threshold, delta_found)
            per_query.append(hits)
        out.append(per_query)
    return out


def _found(
    answer: tuple[bytes, bytes, int, int],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    sims, rows, _, _ = answer
    return np.frombuffer(rows, dtype=np.uint32).astype(np.int64), np.frombuffer(sims, np.float64)


def _tabled(snapshots: Mapping[str, Snapshot], threshold: float) -> dict[str, LshTable]:
    """The snapshots whose main segments have prepared tables for this threshold."""
    return {
        name: snap.main.lsh
        for name, snap in snapshots.items()
        if snap.main.lsh is not None
        and snap.main.lsh.prepared is not None
        and threshold >= snap.main.lsh_threshold
    }
