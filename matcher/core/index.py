"""Standing indexes in memory, and the one-vs-many similarity search over them.

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

`MemberIndex` is one member's index: an immutable `Snapshot` (a large popcount-sorted
*main* segment, a small sorted *delta* of recent puts, and the main rows removed or
replaced since it was built) that queries read without locks, and a writer that
builds the next snapshot and swaps it in. When the delta grows past a fraction of the
main segment the two are merged (compaction), so a put costs O(delta), not O(index).
The merge runs in a background thread: the change that starts it is acknowledged at
once, and until the merged segment is in, queries read the old main and a delta that
holds every change since. Only a change that leaves the delta far behind (`MERGE_WAIT`
times the merge point, a bulk load say) waits for a merge before it returns.

A main segment of `lshindex.MIN_ROWS` rows or more also carries an `LshTable`
(lshindex.py), built with it for the project's threshold: a query then decides
only the rows that share a (probed) band key with it instead of scanning them all. The
delta is always scanned (it is small), and dead rows are dropped from what either finds,
so a change is visible to the very next query whichever path answers it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import hugepages, kernel
from blindmatch.matcher.core.lshindex import (
    MIN_ROWS,
    LshTable,
    TablePlan,
    bit_agreement,
    plan_tables,
    search_many,
)

log = logging.getLogger("blindmatch.matcher.index")

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]

# Rows scanned per step: small enough that the temporaries stay in cache.
SCAN_ROWS = 16_384
# The delta is merged into main when it holds more than this many rows, or more than
# main/COMPACT_FRACTION rows, whichever is larger.
COMPACT_MIN = 4_096
COMPACT_FRACTION = 64
# A change that leaves more than this many times that in the delta (or dead) merges
# before it returns, instead of in the background: the delta is scanned, row by row.
MERGE_WAIT = 8
# A merge copies and maps rows this many at a time, so the GIL it holds (the queries beside
# it need it too) is never held for long (docs/performance.md: the merge in the background).
MERGE_STEP = 16_384
# The merge thread's nice value (Linux: per thread): when queries keep every core busy,
# the merge takes the time they leave rather than theirs, and finishes later.
MERGE_NICE = 10
# Look-ups of its own rows a starting matcher runs over each project's tables (warm_up).
WARM_UP_LOOKUPS = 2_000


def merge_point(main_rows: int) -> int:
    """How many delta (or dead) rows an index of `main_rows` takes before it is merged."""
    return max(COMPACT_MIN, main_rows // COMPACT_FRACTION)


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


def plan_for(words: U64, popcounts: I32, threshold: float) -> TablePlan | None:
    """LSH bands for a segment of these rows at this threshold (None: scan it instead)."""
    if len(words) < MIN_ROWS or not 0 < threshold <= 1:
        return None
    high = float(np.quantile(popcounts, 0.99))
    return plan_tables(len(words), words.shape[1] * 64, high, bit_agreement(words), threshold)


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
        lsh_plan = plan_for(words, popcounts, threshold) if threshold is not None else None
        table = None
        if lsh_plan is not None:
            started = time.perf_counter()
            table = LshTable.build(words, lsh_plan, float(threshold or 0.0))
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
) -> dict[str, list[tuple[str, float]]]:
    """`Snapshot.search` on each (every partner's index, say), with the look-ups of the
    main segments that have prepared tables for this threshold in one native call."""
    tabled = {
        name: snap.main.lsh
        for name, snap in snapshots.items()
        if snap.main.lsh is not None
        and snap.main.lsh.prepared is not None
        and threshold >= snap.main.lsh_threshold
    }
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


@dataclass
class MemberIndex:
    """One member's standing index in memory; `snapshot` is safe to read from any thread.

    Writers (`apply`, and a background merge putting its segment in) take `lock`.
    """

    clk_bits: int
    snapshot: Snapshot
    # ref -> its main row r as r, or its delta row r as -1 - r; for the writer only.
    # Plain ints, not (segment, row) tuples: a million records would otherwise be a
    # million more objects for every garbage collection to walk.
    _where: dict[str, int] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)
    # The main segment gets LSH tables for this threshold (None: always scanned).
    threshold: float | None = None
    # Merge in a background thread (False: before `apply` returns, every time), on these
    # CPUs (None: wherever the thread that starts it may run).
    background: bool = True
    merge_cpus: frozenset[int] | None = None
    _merging: threading.Thread | None = None
    _touched: set[str] = field(default_factory=set)  # refs changed since the merge began

    @classmethod
    def load(
        cls,
        clk_bits: int,
        refs: Sequence[str],
        clks: U64,
        *,
        threshold: float | None = None,
        merge_cpus: frozenset[int] | None = None,
    ) -> MemberIndex:
        """An index built in one go (at start-up, from the durable store).

        With `threshold` (the project's), a large main segment gets LSH tables for it.
        """
        main = Segment.build(clks, refs, threshold=threshold)
        index = cls(
            clk_bits,
            Snapshot(main, Segment.empty(clk_bits // 64), frozenset(), len(main)),
            threshold=threshold,
            merge_cpus=merge_cpus,
        )
        index._where = main_rows(main)
        return index

    def __len__(self) -> int:
        return self.snapshot.size

    def __contains__(self, ref: str) -> bool:
        with self.lock:
            return ref in self._where

    def refs(self) -> list[str]:
        with self.lock:
            return list(self._where)

    def clk(self, ref: str) -> U64:
        """The CLK stored under `ref` (KeyError when absent)."""
        with self.lock:
            row = self._where[ref]
            snap = self.snapshot
            return snap.main.words[row] if row >= 0 else snap.delta.words[-1 - row]

    @property
    def merging(self) -> bool:
        """Whether a background merge is running."""
        return self._merging is not None

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Wait for a running background merge (and any it chains into); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while self._merging is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def apply(self, put_refs: Sequence[str], put_words: U64, remove: Sequence[str]) -> None:
        """Put (add or replace) and remove records; the caller has checked the refs."""
        with self.lock:
            while True:
                snap = self.snapshot
                dead = set(snap.dead)
                keep_delta = np.ones(len(snap.delta), dtype=bool)
                for ref in (*remove, *put_refs):
                    row = self._where.get(ref)
                    if row is None:
                        continue
                    if row >= 0:
                        dead.add(row)
                    else:
                        keep_delta[-1 - row] = False
                delta_refs = [
                    r for r, k in zip(snap.delta.refs, keep_delta.tolist(), strict=True) if k
                ]
                delta_refs.extend(put_refs)
                behind = max(len(delta_refs), len(dead))
                merge_at = merge_point(len(snap.main))
                now = behind > merge_at and (not self.background or behind > MERGE_WAIT * merge_at)
                if not now or self._merging is None:
                    break
                self.lock.wait()  # for the running merge; then work it out again
            delta_words = np.concatenate([snap.delta.words[keep_delta], put_words])
            size = len(snap.main) - len(dead) + len(delta_refs)
            if now:
                words, refs = live_rows(snap.main, dead, delta_words, delta_refs)
                main = Segment.build(words, refs, threshold=self.threshold)
                self.snapshot = Snapshot(
                    main, Segment.empty(self.clk_bits // 64), frozenset(), size
                )
                drain(self._where)
                self._where = main_rows(main)
                return
            delta = Segment.build(delta_words, delta_refs)
            # Built: from here on nothing fails, so a failed change leaves no trace.
            for ref in (*remove, *put_refs):
                self._where.pop(ref, None)
            if self._merging is not None:
                self._touched.update(remove)
                self._touched.update(put_refs)
            for row, ref in enumerate(delta.refs):
                self._where[ref] = -1 - row
            self.snapshot = Snapshot(snap.main, delta, frozenset(dead), size)
            if behind > merge_at and self._merging is None:
                self._start_merge()

    def _start_merge(self) -> None:
        """Merge the current snapshot in a background thread; the lock is held."""
        base = self.snapshot
        self._touched = set()
        self._merging = threading.Thread(
            target=self._merge, args=(base,), name="blindmatch-merge", daemon=True
        )
        self._merging.start()

    def _merge(self, base: Snapshot) -> None:
        """Build one main segment of `base`'s live rows, then put it in under the lock,
        with the changes made meanwhile (the refs in `_touched`) as its delta."""
        started = time.perf_counter()
        if hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MERGE_NICE)
        if self.merge_cpus is not None and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):  # a CPU taken away since: stay where we are
                os.sched_setaffinity(0, self.merge_cpus)
        try:
            words, refs = live_rows(base.main, base.dead, base.delta.words, base.delta.refs)
            main = Segment.build(words, refs, threshold=self.threshold)
            del words
            where = main_rows(main)
        except Exception:  # out of memory, say: the delta keeps every change meanwhile
            log.exception("merging an index's delta failed; the next change tries again")
            with self.lock:
                self._merging = None
                self._touched = set()
                self.lock.notify_all()
            return
        with self.lock:
            touched, snap = self._touched, self.snapshot
            dead = frozenset(where.pop(r) for r in touched if r in where)
            keep = [row for row, ref in enumerate(snap.delta.refs) if ref in touched]
            delta = Segment.build(snap.delta.words[keep], [snap.delta.refs[i] for i in keep])
            for row, ref in enumerate(delta.refs):
                where[ref] = -1 - row
            self.snapshot = Snapshot(main, delta, dead, len(main) - len(dead) + len(delta))
            old, self._where = self._where, where
            self._merging = None
            self._touched = set()
            log.info(
                "merged %d rows into an index in %.2f s; %d changed meanwhile",
                len(main),
                time.perf_counter() - started,
                len(touched),
            )
            if max(len(delta), len(dead)) > merge_point(len(main)):
                self._start_merge()
            self.lock.notify_all()
        drain(old)


def live_rows(
    main: Segment, dead: Collection[int], delta_words: U64, delta_refs: Sequence[str]
) -> tuple[U64, list[str]]:
    """The CLKs and refs of main's rows not in `dead`, then the delta's: what a merge
    builds its segment of (copied MERGE_STEP rows at a time)."""
    alive = np.ones(len(main), dtype=bool)
    alive[list(dead)] = False
    words = np.empty((int(alive.sum()) + len(delta_words), main.words.shape[1]), np.uint64)
    at = 0
    for start in range(0, len(main), MERGE_STEP):
        part = main.words[start : start + MERGE_STEP][alive[start : start + MERGE_STEP]]
        words[at : at + len(part)] = part
        at += len(part)
    words[at:] = delta_words
    refs = [r for r, a in zip(main.refs, alive.tolist(), strict=True) if a]
    refs.extend(delta_refs)
    return words, refs


def main_rows(main: Segment) -> dict[str, int]:
    """Where each of a main segment's refs is, for `MemberIndex._where`."""
    where: dict[str, int] = {}
    refs = main.refs
    for start in range(0, len(refs), MERGE_STEP):
        chunk = refs[start : start + MERGE_STEP]
        where.update(zip(chunk, range(start, start + len(chunk)), strict=True))
    return where


def drain(where: dict[str, int]) -> None:
    """Empty a replaced `_where` MERGE_STEP entries at a time (freed whole, a large dict
    holds the GIL while it is freed)."""
    while where:
        for _ in range(min(MERGE_STEP, len(where))):
            where.popitem()
