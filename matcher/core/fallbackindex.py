"""A standing index of CLKs with a fallback CLK, searched by the batch runs' fallback rule.

A member whose schema has a fallback CLK (`blindmatch.fallback`) indexes, per record, its
first record-level CLK followed by its fallback CLK (`Encoding.fallback_bits` long). A
batch run scores a pair on the fallback CLKs when either record lacks the left-out fields,
on the first CLKs otherwise (`core.fallback`); a real-time query must answer the same, so
this index keeps the two halves as two `MemberIndex`es (each popcount-sorted, with its own
LSH tables when large) and the refs of the records that lack the fields. A query searches
the first halves only when it has the fields itself, and keeps what `fallback.query_hits`
says the rule scores by each half. Same memory as one index of the whole CLKs, plus the
set of lacking refs and a second ref table.

Each half is a `MemberIndex` of its own (index.py), so each plans its own LSH tables from
its own rows (rtplan.py: the first CLKs' informative bits are not the fallback CLKs'), and
either half falls back to a full scan on its own when no plan reaches the design recall.
`search_batch` answers many queries against partners' indexes, with or without fallback
CLKs, with the look-ups of every half of every index in one native call
(`segment.search_batch`; matcher/realtime/lookups.py batches the queries that arrive
together through it): a query against an index with a fallback CLK is one look-up of its
fallback half, plus one of its first half when the query has the fields.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from blindmatch.matcher.core import fallback, segment
from blindmatch.matcher.core.index import MemberIndex
from blindmatch.matcher.core.segment import U64, Hits, Segment, Snapshot


@dataclass(frozen=True)
class FallbackSnapshot:
    """What a query reads: both halves' snapshots and the refs lacking the fields."""

    first: Snapshot
    second: Snapshot
    lacking: frozenset[str] | set[str]
    cut: int  # 64-bit words of the first CLK

    def search(self, query: U64, threshold: float) -> list[tuple[str, float]]:
        """(ref, score) of every live record the rule scores at or above `threshold`."""
        q1, q2 = query[: self.cut], query[self.cut :]
        query_lacks = bool(fallback.lacking(q1[None, :], q2[None, :])[0])
        return fallback.query_hits(
            query_lacks,
            lambda: self.first.search(q1, threshold),
            lambda: self.second.search(q2, threshold),
            self.lacking,
        )


# What a query reads of one partner's index: a plain one, or one with a fallback CLK.
AnySnapshot = Snapshot | FallbackSnapshot
# One ask: (partner -> what the query reads of its index, the queries as rows, threshold).
Ask = tuple[Mapping[str, AnySnapshot], U64, float]


def search_indexes(
    snapshots: Mapping[str, AnySnapshot], query: U64, threshold: float
) -> dict[str, Hits]:
    """`segment.search_snapshots` over partners' indexes, with or without fallback CLKs."""
    return search_batch([(snapshots, query[None, :], threshold)])[0][0]


def search_batch(asks: Sequence[Ask]) -> list[list[dict[str, Hits]]]:
    """For each (snapshots, queries, threshold): each query row's hits in each snapshot,
    best first, under the fallback rule for the snapshots with a fallback CLK.

    Every look-up goes to `segment.search_batch` at once (one native call for the lot):
    an ask's plain snapshots with its whole queries; for each cut between first and
    fallback CLK, the fallback halves with every query's fallback CLK, and the first
    halves with the first CLKs of the queries that have the fields (a query that lacks
    them is scored on fallback CLKs only, so its first half is never searched)."""
    plain: list[tuple[Mapping[str, Snapshot], U64, float]] = []
    # (ask, its snapshots with a fallback CLK at one cut, the queries that have the fields,
    # where the first halves' ask is in `plain`: the fallback halves' is the next one)
    halves: list[tuple[int, dict[str, FallbackSnapshot], list[int], int]] = []
    own: list[int] = []  # where each ask's plain snapshots' look-ups are in `plain`
    for k, (snapshots, queries, threshold) in enumerate(asks):
        own.append(len(plain))
        plain.append(
            ({m: s for m, s in snapshots.items() if isinstance(s, Snapshot)}, queries, threshold)
        )
        by_cut: dict[int, dict[str, FallbackSnapshot]] = {}
        for m, s in snapshots.items():
            if isinstance(s, FallbackSnapshot):
                by_cut.setdefault(s.cut, {})[m] = s
        for cut, group in by_cut.items():
            q1 = np.ascontiguousarray(queries[:, :cut])
            q2 = np.ascontiguousarray(queries[:, cut:])
            having = np.flatnonzero(~fallback.lacking(q1, q2))
            halves.append((k, group, having.tolist(), len(plain)))
            plain.append(({m: s.first for m, s in group.items()}, q1[having], threshold))
            plain.append(({m: s.second for m, s in group.items()}, q2, threshold))
    found = segment.search_batch(plain)
    answers = [found[at] for at in own]
    for k, group, has, at in halves:
        firsts = dict(zip(has, found[at], strict=True))
        for i, seconds in enumerate(found[at + 1]):
            mine = firsts.get(i, {})
            for m, s in group.items():
                answers[k][i][m] = fallback.query_hits(
                    i not in firsts,
                    partial(mine.__getitem__, m),
                    partial(seconds.__getitem__, m),
                    s.lacking,
                )
    return [
        [{m: answer[m] for m in snapshots} for answer in answers[k]]
        for k, (snapshots, _, _) in enumerate(asks)
    ]


def searchable(words: U64, refs: Sequence[str], fallback_bits: int) -> Snapshot | FallbackSnapshot:
    """A few records (a change's puts, say) to search as a standing index of them would be."""
    if not fallback_bits:
        main = Segment.build(words, refs)
        return Snapshot(main, Segment.empty(words.shape[1]), frozenset(), len(main))
    return FallbackIndex.load(words.shape[1] * 64, fallback_bits, refs, words).snapshot


@dataclass(eq=False)
class FallbackIndex:
    """One member's standing index of CLKs with a fallback CLK (the `MemberIndex` calls a
    standing index makes, over both halves)."""

    clk_bits: int
    fallback_bits: int
    first: MemberIndex
    second: MemberIndex
    # Refs of the records that lack the fallback's fields; changed in place by the writer
    # (a query reads one membership at a time).
    lacking: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cut(self) -> int:
        return (self.clk_bits - self.fallback_bits) // 64

    @classmethod
    def load(
        cls,
        clk_bits: int,
        fallback_bits: int,
        refs: Sequence[str],
        clks: U64,
        *,
        threshold: float | None = None,
        merge_cpus: frozenset[int] | None = None,
    ) -> FallbackIndex:
        """An index built in one go; `clks` are whole CLKs, (n, clk_bits/64) words."""
        cut = (clk_bits - fallback_bits) // 64
        first, second = _halves(clks, cut)
        index = cls(
            clk_bits,
            fallback_bits,
            MemberIndex.load(
                clk_bits - fallback_bits, refs, first, threshold=threshold, merge_cpus=merge_cpus
            ),
            MemberIndex.load(
                fallback_bits, refs, second, threshold=threshold, merge_cpus=merge_cpus
            ),
        )
        index.lacking = _lacking(refs, first, second)
        return index

    @property
    def snapshot(self) -> FallbackSnapshot:
        return FallbackSnapshot(self.first.snapshot, self.second.snapshot, self.lacking, self.cut)

    def apply(self, put_refs: Sequence[str], put_words: U64, remove: Sequence[str]) -> None:
        """Put (add or replace) and remove records; the caller has checked the refs."""
        first, second = _halves(put_words, self.cut)
        with self.lock:
            self.first.apply(put_refs, first, remove)
            self.second.apply(put_refs, second, remove)
            self.lacking.difference_update(remove)
            self.lacking.difference_update(put_refs)
            self.lacking.update(_lacking(put_refs, first, second))

    def __len__(self) -> int:
        return len(self.first)

    def __contains__(self, ref: str) -> bool:
        return ref in self.first

    def refs(self) -> list[str]:
        return self.first.refs()

    def clk(self, ref: str) -> U64:
        """The whole CLK stored under `ref` (KeyError when absent)."""
        return np.concatenate([self.first.clk(ref), self.second.clk(ref)])

    @property
    def merging(self) -> bool:
        return self.first.merging or self.second.merging

    def wait_merged(self, timeout: float | None = None) -> bool:
        return self.first.wait_merged(timeout) and self.second.wait_merged(timeout)


def _halves(words: U64, cut: int) -> tuple[U64, U64]:
    return np.ascontiguousarray(words[:, :cut]), np.ascontiguousarray(words[:, cut:])


def _lacking(refs: Sequence[str], first: U64, second: U64) -> set[str]:
    lacks = fallback.lacking(first, second).tolist() if len(refs) else []
    return {ref for ref, lacks_it in zip(refs, lacks, strict=True) if lacks_it}
