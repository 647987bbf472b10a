"""A member's standing index in memory: snapshots for the queries, a writer for changes.

`MemberIndex` is one member's index: an immutable `Snapshot` (segment.py: a large
popcount-sorted *main* segment, a small sorted *delta* of recent puts, and the main rows
removed or replaced since it was built) that queries read without locks, and a writer
that builds the next snapshot and swaps it in. When the delta grows past a fraction of the
main segment the two are merged (compaction), so a put costs O(delta), not O(index).
The merge runs in a background thread: the change that starts it is acknowledged at
once, and until the merged segment is in, queries read the old main and a delta that
holds every change since. Only a change that leaves the delta far behind (`MERGE_WAIT`
times the merge point, a bulk load say) waits for a merge before it returns.

The search itself (scans, LSH tables, batches of queries) is segment.py's; its names are
imported here too for the modules that import them from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.segment import (
    MIN_ROWS,
    SCAN_ROWS,
    WARM_UP_LOOKUPS,
    Segment,
    Snapshot,
    as_words,
    popcount_range,
    popcounts_of,
    search,
    search_batch,
    search_snapshots,
    warm_up,
)

__all__ = [
    "MIN_ROWS",
    "SCAN_ROWS",
    "WARM_UP_LOOKUPS",
    "MemberIndex",
    "Segment",
    "Snapshot",
    "as_words",
    "merge_point",
    "popcount_range",
    "popcounts_of",
    "search",
    "search_batch",
    "search_snapshots",
    "warm_up",
]

log = logging.getLogger("blindmatch.matcher.index")

U64 = npt.NDArray[np.uint64]

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


def merge_point(main_rows: int) -> int:
    """How many delta (or dead) rows an index of `main_rows` takes before it is merged."""
    return max(COMPACT_MIN, main_rows // COMPACT_FRACTION)


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
    # Called (the lock held) once a background merge has put its snapshot in.
    merged: Callable[[], None] | None = None

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

    def rows(self) -> tuple[list[str], U64]:
        """Every record's ref and CLK, as of one moment (a look-up server's load)."""
        return snapshot_rows(self.snapshot)  # replaced whole on a change: one version

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
            self.prepare(put_refs, put_words, remove)()
            self.merge_if_due()

    def prepare(
        self, put_refs: Sequence[str], put_words: U64, remove: Sequence[str]
    ) -> Callable[[], None]:
        """Build the next snapshot of a change (everything that can fail, out of memory
        say); the returned call swaps it in, and nothing of it fails. The lock is held, from
        here until that call (a merge waited for releases it: then worked out again); a
        failed change leaves no trace. `FallbackIndex.apply` builds its three parts' before
        it swaps any in."""
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
            delta_refs = [r for r, k in zip(snap.delta.refs, keep_delta.tolist(), strict=True) if k]
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
            where = main_rows(main)

            def merged() -> None:
                self.snapshot = Snapshot(main, Segment.empty(self.clk_bits // 64), frozenset(),
                                         size)  # fmt: skip
                old, self._where = self._where, where
                drain(old)

            return merged
        delta = Segment.build(delta_words, delta_refs)

        def changed() -> None:
            for ref in (*remove, *put_refs):
                self._where.pop(ref, None)
            if self._merging is not None:
                self._touched.update(remove)
                self._touched.update(put_refs)
            for row, ref in enumerate(delta.refs):
                self._where[ref] = -1 - row
            self.snapshot = Snapshot(snap.main, delta, frozenset(dead), size)

        return changed

    def merge_if_due(self) -> None:
        """Start a background merge if the delta (or dead) has grown past the merge point;
        the lock is held."""
        snap = self.snapshot
        behind = max(len(snap.delta), len(snap.dead))
        if behind > merge_point(len(snap.main)) and self._merging is None:
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
            if self.merged is not None:  # (a `FallbackIndex`'s view of its parts)
                self.merged()
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


def snapshot_rows(snap: Snapshot) -> tuple[list[str], U64]:
    """A snapshot's live records: refs, and their CLKs as words."""
    words, refs = live_rows(snap.main, snap.dead, snap.delta.words, snap.delta.refs)
    return refs, words


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
