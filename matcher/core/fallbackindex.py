"""A standing index of CLKs with a fallback CLK, searched by the batch runs' fallback rule.

A member whose schema has a fallback CLK (`blindmatch.fallback`) indexes, per record, its
first record-level CLK followed by its fallback CLK (`Encoding.fallback_bits` long). A
batch run scores a pair on the fallback CLKs when either record lacks the left-out fields,
on the first CLKs otherwise (`core.fallback`); a real-time query must answer the same, so
this index keeps the first halves as one `MemberIndex` and the fallback halves as two: those
of the records that have the fields (`second`) and those of the records that lack them
(`lacks`, about 1% of a police force's records), each popcount-sorted, with its own LSH
tables when large, and the refs of the records that lack the fields. Under the rule a
query that has the fields scores a record on fallback CLKs only when the record lacks them,
so it searches the first halves and `lacks` (a small index, scanned) and never walks the
fallback tables of the records that have them; a query that lacks the fields searches
`second` and `lacks`. Either way it keeps what `fallback.query_hits` says the rule scores
by each half. Same memory as one index of the whole CLKs, plus the set of lacking refs and
two more ref tables (a record moves between `second` and `lacks` when a put changes
whether it has the fields).

Each half is a `MemberIndex` of its own (index.py), so each plans its own LSH tables from
its own rows (rtplan.py: the first CLKs' informative bits are not the fallback CLKs'), and
either half falls back to a full scan on its own when no plan reaches the design recall.

With a rule over both CLKs (`fallback.Rule`, schema `blindmatch.rule`), a query that has
the fields scores a record that has them by S = D1 + gap * (D1 - D2) - offset, as a batch
run does: the first halves are searched (and their LSH tables built) for the rule's
candidate floor instead of the threshold, and each record found there is kept when its S,
from its whole CLK as the index holds it now (`FallbackIndex.clk`), reaches the threshold.
`search_batch` answers many queries against partners' indexes, with or without fallback
CLKs, with the look-ups of every half of every index in one native call
(`segment.search_batch`; matcher/realtime/lookups.py batches the queries that arrive
together through it): a query against an index with a fallback CLK is a look-up of its
first half and of `lacks` when the query has the fields, of `second` and `lacks` when not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import fallback, segment
from blindmatch.matcher.core.index import MemberIndex, snapshot_rows
from blindmatch.matcher.core.segment import U64, Hits, Segment, Snapshot
from blindmatch.matcher.core.solve import dice


@dataclass(frozen=True)
class FallbackSnapshot:
    """What a query reads: the first halves', and the two parts of the fallback halves'
    snapshots, and the refs lacking the fields."""

    first: Snapshot  # every record's first CLK
    second: Snapshot  # the fallback CLKs of the records that have the fields
    lacks: Snapshot  # the fallback CLKs of the records that lack them
    lacking: frozenset[str] | set[str]
    cut: int  # 64-bit words of the first CLK
    rule: fallback.Rule = fallback.NO_RULE
    # A record's whole CLK as the index holds it (for the rule's D2); None without a rule.
    clk: Callable[[str], U64] | None = None

    def search(self, query: U64, threshold: float) -> list[tuple[str, float]]:
        """(ref, score) of every live record the rule scores at or above `threshold`."""
        q1, q2 = query[: self.cut], query[self.cut :]
        query_lacks = bool(fallback.lacking(q1[None, :], q2[None, :])[0])

        def second() -> Hits:
            found = self.lacks.search(q2, threshold)
            return self.second.search(q2, threshold) + found if query_lacks else found

        def first() -> Hits:
            found = self.first.search(q1, self.rule.candidate_floor(threshold))
            return self.ruled(found, query, threshold)

        return fallback.query_hits(query_lacks, first, second, self.lacking)

    def ruled(self, found: Hits, query: U64, threshold: float) -> Hits:
        """First-half hits (found at the rule's candidate floor) rescored by the rule and
        kept at or above `threshold`; as found without a rule. Hits of records that lack
        the fields are dropped later (`query_hits`); a record removed since this snapshot
        is dropped here."""
        if not self.rule.active or not found:
            return found
        assert self.clk is not None
        refs, rows = [], []
        for ref, _ in found:
            if ref in self.lacking:
                continue
            try:
                rows.append(self.clk(ref))
            except KeyError:  # removed by a change since this snapshot was taken
                continue
            refs.append(ref)
        if not refs:
            return []
        held = np.stack(rows)
        q = np.broadcast_to(query, held.shape)
        cut = self.cut
        scores = self.rule.score(dice(q[:, :cut], held[:, :cut]), dice(q[:, cut:], held[:, cut:]))
        return [(r, float(s)) for r, s in zip(refs, scores.tolist(), strict=True) if s >= threshold]


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
    fallback CLK, the `lacks` parts with every query's fallback CLK, the first halves with
    the first CLKs of the queries that have the fields, and the `second` parts with the
    fallback CLKs of those that lack them (the rule scores a query that has the fields on
    fallback CLKs only against records that lack them, and one that lacks them never on
    first CLKs)."""
    plain: list[tuple[Mapping[str, Snapshot], U64, float]] = []
    # (ask, its snapshots with a fallback CLK at one cut, the queries that have the fields,
    # the queries that lack them, where the first halves' ask is in `plain`: the `lacks`
    # parts' and the `second` parts' are the next two)
    halves: list[tuple[int, dict[str, FallbackSnapshot], list[int], list[int], int]] = []
    own: list[int] = []  # where each ask's plain snapshots' look-ups are in `plain`
    for k, (snapshots, queries, threshold) in enumerate(asks):
        own.append(len(plain))
        plain.append(
            ({m: s for m, s in snapshots.items() if isinstance(s, Snapshot)}, queries, threshold)
        )
        by_cut: dict[tuple[int, fallback.Rule], dict[str, FallbackSnapshot]] = {}
        for m, s in snapshots.items():
            if isinstance(s, FallbackSnapshot):
                by_cut.setdefault((s.cut, s.rule), {})[m] = s
        for (cut, rule), group in by_cut.items():
            q1 = np.ascontiguousarray(queries[:, :cut])
            q2 = np.ascontiguousarray(queries[:, cut:])
            lacks = fallback.lacking(q1, q2)
            having, lacking = np.flatnonzero(~lacks), np.flatnonzero(lacks)
            halves.append((k, group, having.tolist(), lacking.tolist(), len(plain)))
            floor = rule.candidate_floor(threshold)
            plain.append(({m: s.first for m, s in group.items()}, q1[having], floor))
            plain.append(({m: s.lacks for m, s in group.items()}, q2, threshold))
            plain.append(({m: s.second for m, s in group.items()}, q2[lacking], threshold))
    found = segment.search_batch(plain)
    answers = [found[at] for at in own]
    for k, group, has, lack, at in halves:
        firsts = dict(zip(has, found[at], strict=True))
        seconds = dict(zip(lack, found[at + 2], strict=True))
        queries, threshold = asks[k][1], asks[k][2]
        for i, few in enumerate(found[at + 1]):
            mine, rest = firsts.get(i, {}), seconds.get(i, {})
            for m, s in group.items():
                answers[k][i][m] = fallback.query_hits(
                    i in seconds,
                    partial(_first, s, mine, m, queries[i], threshold),
                    partial(_joined, rest, few, m),
                    s.lacking,
                )
    return [
        [{m: answer[m] for m in snapshots} for answer in answers[k]]
        for k, (snapshots, _, _) in enumerate(asks)
    ]


def _first(
    snap: FallbackSnapshot, mine: Mapping[str, Hits], member: str, query: U64, threshold: float
) -> Hits:
    """A member's first-half hits for a query that has the fields, under its rule."""
    return snap.ruled(mine[member], query, threshold)


def _joined(rest: Mapping[str, Hits], few: Mapping[str, Hits], member: str) -> Hits:
    """A member's fallback-CLK hits: in `second` (searched for queries lacking the fields
    only) and in `lacks`."""
    return [*rest.get(member, ()), *few[member]]


def searchable(
    words: U64, refs: Sequence[str], fallback_bits: int, rule: fallback.Rule = fallback.NO_RULE
) -> Snapshot | FallbackSnapshot:
    """A few records (a change's puts, say) to search as a standing index of them would be."""
    if not fallback_bits:
        main = Segment.build(words, refs)
        return Snapshot(main, Segment.empty(words.shape[1]), frozenset(), len(main))
    return FallbackIndex.load(words.shape[1] * 64, fallback_bits, refs, words, rule=rule).snapshot


@dataclass(eq=False)
class FallbackIndex:
    """One member's standing index of CLKs with a fallback CLK (the `MemberIndex` calls a
    standing index makes, over its three parts)."""

    clk_bits: int
    fallback_bits: int
    first: MemberIndex  # every record's first CLK
    second: MemberIndex  # the fallback CLKs of the records that have the fields
    lacks: MemberIndex  # the fallback CLKs of the records that lack them
    # Refs of the records that lack the fallback's fields; replaced whole by a change
    lacking: frozenset[str] = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock)
    rule: fallback.Rule = fallback.NO_RULE  # how a pair that both have the fields is scored
    # What a query reads (`snapshot`): the three parts' snapshots and `lacking` as of one
    # change, replaced whole once a change has built every part's (`apply`), or a part's
    # merge is in; so a query never sees one part changed and another not.
    _view: FallbackSnapshot | None = field(default=None, repr=False)
    _view_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        for part in self.parts:
            part.merged = self._publish
        self._publish()

    def _publish(self) -> None:
        """Make what the parts and `lacking` hold now what queries read (the writer's part
        locks held: `apply`, or a part's merge: `MemberIndex.merged`)."""
        with self._view_lock:
            self._view = FallbackSnapshot(
                self.first.snapshot,
                self.second.snapshot,
                self.lacks.snapshot,
                self.lacking,
                self.cut,
                self.rule,
                self.clk if self.rule.active else None,
            )

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
        rule: fallback.Rule = fallback.NO_RULE,
    ) -> FallbackIndex:
        """An index built in one go; `clks` are whole CLKs, (n, clk_bits/64) words. With a
        rule, the first halves' tables are for its candidate floor under `threshold`."""
        cut = (clk_bits - fallback_bits) // 64
        first, second = _halves(clks, cut)
        lacks = _lacks(first, second)
        having, lacking = np.flatnonzero(~lacks), np.flatnonzero(lacks)

        def part(
            bits: int, rows: U64, rows_refs: Sequence[str], at: float | None = threshold
        ) -> MemberIndex:
            return MemberIndex.load(bits, rows_refs, rows, threshold=at, merge_cpus=merge_cpus)

        floor = None if threshold is None else rule.candidate_floor(threshold)
        fallback_refs = [[refs[i] for i in having.tolist()], [refs[i] for i in lacking.tolist()]]
        return cls(
            clk_bits,
            fallback_bits,
            part(clk_bits - fallback_bits, first, refs, floor),
            part(fallback_bits, np.ascontiguousarray(second[having]), fallback_refs[0]),
            part(fallback_bits, np.ascontiguousarray(second[lacking]), fallback_refs[1]),
            frozenset(fallback_refs[1]),
            rule=rule,
        )

    @property
    def snapshot(self) -> FallbackSnapshot:
        view = self._view
        assert view is not None  # (`__post_init__`)
        return view

    def apply(self, put_refs: Sequence[str], put_words: U64, remove: Sequence[str]) -> None:
        """Put (add or replace) and remove records; the caller has checked the refs.

        A record put goes to `second` or `lacks` as it has the fields or not, and out of
        the other (where an earlier version of it may be). Atomic for a query: every part's
        next snapshot is built first (out of memory there: nothing changed), then all are
        swapped in, and what queries read (`snapshot`) replaced once, holding them all."""
        first, second = _halves(put_words, self.cut)
        lacks = _lacks(first, second).tolist()
        having = [i for i, lack in enumerate(lacks) if not lack]
        lacking = [i for i, lack in enumerate(lacks) if lack]
        having_refs = [put_refs[i] for i in having]
        lacking_refs = [put_refs[i] for i in lacking]
        with self.lock, self.first.lock, self.second.lock, self.lacks.lock:
            swaps = [
                self.first.prepare(put_refs, first, remove),
                self.second.prepare(having_refs, second[having], [*remove, *lacking_refs]),
                self.lacks.prepare(lacking_refs, second[lacking], [*remove, *having_refs]),
            ]
            gone = {*remove, *having_refs}
            now = frozenset([*(r for r in self.lacking if r not in gone), *lacking_refs])
            for swap in swaps:  # (nothing fails from here on)
                swap()
            self.lacking = now
            self._publish()
            for part in self.parts:
                part.merge_if_due()

    def __len__(self) -> int:
        return len(self.first)

    def __contains__(self, ref: str) -> bool:
        return ref in self.first

    def refs(self) -> list[str]:
        return self.first.refs()

    def clk(self, ref: str) -> U64:
        """The whole CLK stored under `ref` (KeyError when absent), as of one change."""
        with self.lock:
            part = self.lacks if ref in self.lacking else self.second
            return np.concatenate([self.first.clk(ref), part.clk(ref)])

    def rows(self) -> tuple[list[str], U64]:
        """Every record's ref and whole CLK, as of one moment (a look-up server's load)."""
        view = self.snapshot  # the three parts as of one change
        first, second, lacks = view.first, view.second, view.lacks
        refs, words = snapshot_rows(first)
        second_refs, second_words = snapshot_rows(second)
        lacks_refs, lacks_words = snapshot_rows(lacks)
        at = {r: i for i, r in enumerate([*second_refs, *lacks_refs])}
        rest = np.concatenate([second_words, lacks_words])[[at[r] for r in refs]]
        return refs, np.hstack([words, rest])

    @property
    def parts(self) -> tuple[MemberIndex, MemberIndex, MemberIndex]:
        return self.first, self.second, self.lacks

    @property
    def merging(self) -> bool:
        return any(part.merging for part in self.parts)

    def wait_merged(self, timeout: float | None = None) -> bool:
        return all(part.wait_merged(timeout) for part in self.parts)


def load_index(
    clk_bits: int,
    fallback_bits: int,
    refs: Sequence[str],
    words: U64,
    threshold: float | None,
    merge_cpus: frozenset[int] | None = None,
    rule: fallback.Rule = fallback.NO_RULE,
) -> MemberIndex | FallbackIndex:
    """An index of these records, with a fallback CLK or without (`fallback_bits` 0); with
    LSH tables for `threshold` where large enough (None: none, always scanned), and with a
    fallback CLK scored by `rule`."""
    if fallback_bits:
        return FallbackIndex.load(
            clk_bits, fallback_bits, refs, words, threshold=threshold, merge_cpus=merge_cpus,
            rule=rule,
        )  # fmt: skip
    return MemberIndex.load(clk_bits, refs, words, threshold=threshold, merge_cpus=merge_cpus)


def _halves(words: U64, cut: int) -> tuple[U64, U64]:
    return np.ascontiguousarray(words[:, :cut]), np.ascontiguousarray(words[:, cut:])


def _lacks(first: U64, second: U64) -> npt.NDArray[np.bool_]:
    return fallback.lacking(first, second) if len(first) else np.zeros(0, dtype=bool)
