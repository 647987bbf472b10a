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
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from blindmatch.matcher.core import fallback
from blindmatch.matcher.core.index import U64, MemberIndex, Segment, Snapshot, search_snapshots


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


def search_indexes(
    snapshots: Mapping[str, Snapshot | FallbackSnapshot], query: U64, threshold: float
) -> dict[str, list[tuple[str, float]]]:
    """`core.index.search_snapshots` over partners' indexes, with or without fallback CLKs."""
    plain = {m: s for m, s in snapshots.items() if isinstance(s, Snapshot)}
    found = search_snapshots(plain, query, threshold) if plain else {}
    return {
        m: found[m] if isinstance(s, Snapshot) else s.search(query, threshold)
        for m, s in snapshots.items()
    }


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
