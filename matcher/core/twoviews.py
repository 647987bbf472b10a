"""What each role of a two-server run learns of two members' records, from the roles themselves.

`role_views` puts two or three members' uploads (client/encoding/sharing.py `SharedUpload`,
as `blindmatch encode --two-server` makes them) into the roles of core/twoserver.py, runs
the run in this process (core/tworun.py `drive` over `InProcess`: the code a two-server
project runs) and returns what each role holds of the pairs between members 0 and 1
(docs/privacy-design.md, "What each party learns now"):

- **C**: the linking pairs' rows and each one's bucket (the lower end of the highest cut-off
  its Dice reaches: the threshold and core/twoserver.py `default_buckets`), nothing of a
  candidate that does not link, no popcount; with a third member, also the buckets of the
  pairs inside its groups it asked (extras, kept where they reach the threshold) and the
  pairs of completing its groups that reach the reach cut-off (core/twocomplete.py: valued
  at the cut-off, 0.7 at a threshold of 0.8);
- **S1**: the candidate pairs (S2 returns them to S1, which proposes and evaluates them), no
  value for any pair (its sealed band keys show it no pair of one member's records);
- **S2**: the candidate pairs and each one's count of shared bands, both CLKs' added (it
  opens each matched token once a band: core/twoblocking.py `expanded_pairs`, the opening
  its `expand` de-duplicates); and, of member 0's own records, the pairs it saw paired with
  one token of member 1 (`reused_tokens`: where a key has more rows on one side than copies
  on the other), per CLK.

Members 0 and 1 of at most S1's cap of pairs (core/exhaustive.py `DEFAULT_PAIRS`, the run's
default) are compared without blocking: S1 and S2 then hold the whole cross product and no
count, which their sizes already say, and their views are empty. The views say which pairs of
members were not blocked (`NOT_BLOCKED`), rather than leaving it to be guessed from two empty
views (a blocked pair with no candidate has those too).

`privacy-check --mode two-server` (client/tools/privacy/twocheck.py) attacks each view; the
command line, above both, hands it this function (the client does not import the matcher),
with `clear`: the link-bit circuit's outputs computed in the clear (core/twoclear.py, the
same bits; minutes sooner on members compared without blocking), C then dealing no triple.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.exhaustive import admits, or_default, small_or_default, small_pairs
from blindmatch.matcher.core.twoblocking import (
    Matched,
    PairBatch,
    PopShares,
    Rows,
    SealedLike,
    Shares,
    expanded_pairs,
    open_tokens,
)
from blindmatch.matcher.core.twoclear import Pops, clear_outputs
from blindmatch.matcher.core.twoprobe import ReachOracle
from blindmatch.matcher.core.tworun import InProcess, drive
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, ShareServer
from blindmatch.matcher.domain import NO_RULE, Rule

Pairs = npt.NDArray[np.intp]  # (pairs, 2): row of member 0, row of member 1
# The views' entry naming the pairs of members (uploads' positions, the lower first) S1 did
# not block: compared whole, no join, nothing opened (client/tools/privacy/twocheck.py reads
# it under the same name; the client does not import the matcher).
NOT_BLOCKED = "members not blocked"
Values = npt.NDArray[np.float64]
ROLES = ("C", "S1", "S2")


class ToS1(Protocol):
    """What a member sends S1 (client/encoding/sharing.py `ToS1`)."""

    @property
    def bands(self) -> Sequence[SealedLike]: ...
    @property
    def shares(self) -> Sequence[Shares]: ...
    @property
    def popcounts(self) -> Sequence[PopShares]: ...
    @property
    def lacking(self) -> npt.NDArray[np.bool_] | None: ...


class ToS2(Protocol):
    """What a member sends S2 (client/encoding/sharing.py `ToS2`)."""

    @property
    def shares(self) -> Sequence[Shares]: ...
    @property
    def seal_key(self) -> bytes: ...
    @property
    def popcounts(self) -> Sequence[PopShares]: ...


class Upload(Protocol):
    """A member's two-server upload (client/encoding/sharing.py `SharedUpload`)."""

    @property
    def s1(self) -> ToS1: ...
    @property
    def s2(self) -> ToS2: ...


def _rows(codes: npt.NDArray[np.uint64]) -> Pairs:
    return np.stack(
        [(codes >> np.uint64(32)).astype(np.intp), (codes & np.uint64(0xFFFFFFFF)).astype(np.intp)],
        axis=1,
    ).reshape(-1, 2)


def reused_tokens(
    matched: Sequence[Matched], seal_key: bytes, records: int, clk: int
) -> tuple[Pairs, Values]:
    """S2's view of member 0's own records on CLK `clk`: the pairs (i, j), i < j, of its rows
    that S2 saw paired with one and the same token of member 1 (the other side's copies ran
    short: core/twoblocking.py `join`), and how many such tokens link each pair (each a
    band's key the two share). Tokens are told apart by their first 8 bytes (AES output: a
    chance collision among 10^6 tokens is about 10^-7)."""
    first, second = [], []
    for m in matched:
        if m.clk != clk or not len(m):
            continue
        rows = open_tokens(seal_key, clk, m.tokens_a, records, "a")
        theirs = np.ascontiguousarray(m.tokens_b[:, :8]).view("<u8").ravel()
        real = rows >= 0
        _u, group, counts = np.unique(theirs[real], return_inverse=True, return_counts=True)
        shared = counts[group] >= 2
        order = np.argsort(group[shared], kind="stable")
        g, r = group[shared][order], rows[real][shared][order]
        bounds = np.flatnonzero(np.diff(g)) + 1
        for part in np.split(r, bounds):
            part = np.unique(part)
            i, j = np.triu_indices(len(part), k=1)
            first.append(part[i])
            second.append(part[j])
    if not first:
        return np.empty((0, 2), np.intp), np.empty(0)
    codes = (np.concatenate(first).astype(np.uint64) << np.uint64(32)) | np.concatenate(
        second
    ).astype(np.uint64)
    pairs, counts = np.unique(codes, return_counts=True)
    return _rows(pairs), counts.astype(np.float64)


class _NoDeal(Combiner):
    """C where the circuit's outputs are computed in the clear (`_Recording` given the
    popcounts): it deals no triple (an AES PRG's output, for every pair through the circuit,
    that nothing would read), and is C otherwise: the same circuits, cut-offs and buckets."""

    def triples(self, circuit: linkbit.Circuit, pairs: int) -> linkbit.Deal:
        return linkbit.Deal(b"", b"", pairs)


class _Recording(InProcess):
    """S1 and S2 in this process, keeping what C reveals of the pairs between members 0 and 1:
    the linking pairs of each part of the proposal and their buckets, the extras' buckets
    (the pairs inside its groups that reach the threshold), and the reach pairs' bits."""

    def __init__(self, s1: BlockingServer, s2: ShareServer, combiner: Combiner,
                 clear: Pops | None = None) -> None:  # fmt: skip
        super().__init__(s1, s2)
        self.combiner = combiner
        self.seen: list[tuple[Pairs, Values]] = []
        self.clear = clear  # the members' popcounts: the circuit's outputs in the clear
        self.dense = clear is None  # outputs in the clear: no block to compute

    def _run(self, part: PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
             transcript: linkbit.Transcript, clock: dict[str, float], tagged: bool,
             drop: npt.NDArray[np.bool_] | None) -> tuple[bytes, bytes]:  # fmt: skip
        if self.clear is None:
            return super()._run(part, circuit, dealt, transcript, clock, tagged, drop)
        return clear_outputs(self.s1, self.s2, self.clear, part, circuit, tagged, drop)

    def _keep(
        self, rows_a: Rows, rows_b: Rows, values: Values, keep: npt.NDArray[np.bool_]
    ) -> None:
        self.seen.append((np.stack([rows_a[keep], rows_b[keep]], axis=1).astype(np.intp),
                          values[keep].astype(np.float64)))  # fmt: skip

    def evaluate_part(self, index: int, offset: int, count: int, circuit: linkbit.Circuit,
                      dealt: linkbit.Deal, transcript: linkbit.Transcript,
                      clock: dict[str, float]) -> tuple[bytes, bytes]:  # fmt: skip
        o1, o2 = super().evaluate_part(index, offset, count, circuit, dealt, transcript, clock)
        assert self.proposal is not None
        if (self.proposal.parts[index].member_a, self.proposal.parts[index].member_b) == (0, 1):
            bits = linkbit.reveal(circuit, o1, o2, count, tagged=True)
            rows_a, rows_b = linkbit.untag(bits)
            values = self.combiner.bucket_scores(bits[: circuit.n_outputs])
            self._keep(rows_a, rows_b, values, bits[0])
        return o1, o2

    def evaluate(self, part: PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
                 transcript: linkbit.Transcript,
                 clock: dict[str, float]) -> tuple[bytes, bytes]:  # fmt: skip
        o1, o2 = super().evaluate(part, circuit, dealt, transcript, clock)
        if (part.member_a, part.member_b) == (0, 1):
            values = self.combiner.bucket_scores(linkbit.reveal(circuit, o1, o2, len(part)))
            self._keep(part.rows_a, part.rows_b, values, values > 0)
        return o1, o2

    def evaluate_reach(self, part: PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
                       transcript: linkbit.Transcript,
                       clock: dict[str, float]) -> tuple[bytes, bytes]:  # fmt: skip
        o1, o2 = super().evaluate_reach(part, circuit, dealt, transcript, clock)
        if (part.member_a, part.member_b) == (0, 1):
            bits = linkbit.reveal(circuit, o1, o2, len(part))[0]
            reach = np.full(len(part), self.combiner.reach or 0.0)
            self._keep(part.rows_a, part.rows_b, reach, bits)
        return o1, o2

    def view(self) -> tuple[Pairs, Values]:
        """Each pair C learned something of, once, with the most it learned (its bucket, the
        reach cut-off)."""
        if not self.seen:
            return np.empty((0, 2), np.intp), np.empty(0)
        pairs = np.concatenate([p for p, _ in self.seen])
        values = np.concatenate([v for _, v in self.seen])
        order = np.lexsort((-values, pairs[:, 1], pairs[:, 0]))
        pairs, values = pairs[order], values[order]
        first = np.ones(len(pairs), bool)
        first[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
        return pairs[first], values[first]


def role_views(
    uploads: Sequence[Upload],
    threshold: float,
    rule: tuple[float, float, float] | None = None,
    dummies: float = 0.0,
    exhaustive: int | None = None,
    clear: bool = False,
) -> dict[str, tuple[Pairs, Values]]:
    """`views_and_oracle`'s views."""
    return views_and_oracle(uploads, threshold, rule, dummies, exhaustive, clear)[0]


def views_and_oracle(
    uploads: Sequence[Upload],
    threshold: float,
    rule: tuple[float, float, float] | None = None,
    dummies: float = 0.0,
    exhaustive: int | None = None,
    clear: bool = False,
) -> tuple[dict[str, tuple[Pairs, Values]], ReachOracle]:
    """Per role ("C", "S1", "S2"), its view of the pairs between members 0 and 1: (pairs, a
    value each), as the module's docstring says; and "S2 A:k", S2's view of member 0's own
    pairs on CLK k (`reused_tokens`). The roles are the run's own objects, the run the one a
    project runs (core/tworun.py `drive`); the pair key and seal keys are fresh, as a
    project's are. A third member (`uploads[2]`) takes part in the run and is attacked in
    nobody's view: C's view of members 0 and 1 then holds the extras inside its groups and
    the reach pairs of completing them (core/twocomplete.py). `dummies`: S1's dummy pairs of
    tokens, a share of the real ones (core/twoserver.py `BlockingServer`): S2's counts and
    the candidates then include them. `rule`: the schema's `blindmatch.rule` (gap, offset,
    reach), which the run applies on the first CLKs' pairs (core/gmwrule.py): C's buckets
    are then of S. With them, the run's S1 and S2 as a dishonest C would go on asking them
    reach pairs of its choosing (core/twoprobe.py `ReachOracle`, within S1's checks).
    `exhaustive`: S1's cap (core/exhaustive.py; None: its default): members 0 and 1 of at
    most that many pairs are compared without blocking, and S1's and S2's views of them are
    empty (the cross product, which their sizes give: no join, no band opened, no count);
    `NOT_BLOCKED`'s pairs are the pairs of members (of all the uploads) S1 did not block.
    `clear`: the link-bit circuit's outputs computed in the clear from the uploads
    (core/twoclear.py: the same bits, without the circuit's rounds and without C dealing
    the circuit's triples; what `privacy-check` uses, minutes faster on members compared
    without blocking); False: the circuit itself."""
    if len(uploads) not in (2, 3):
        raise ValueError("role views: two or three members' uploads")
    pair_key = secrets.token_bytes(32)
    clks = len(uploads[0].s1.bands)
    lacking = [u.s1.lacking for u in uploads]
    s1 = BlockingServer(
        [u.s1.bands for u in uploads], [u.s1.shares for u in uploads], pair_key,
        [u.s1.popcounts for u in uploads],
        None if any(x is None for x in lacking) else [x for x in lacking if x is not None],
        dummies,
        or_default(exhaustive),
        small_or_default(None),
    )  # fmt: skip
    seal_keys = [u.s2.seal_key for u in uploads]
    s2 = ShareServer([u.s2.shares for u in uploads], pair_key,
                     [u.s2.popcounts for u in uploads], seal_keys)  # fmt: skip
    records = (len(uploads[0].s1.shares[0]), len(uploads[1].s1.shares[0]))
    # S1 joins, S2 opens each matched token once (its count of shared bands per pair) and
    # expands them into the candidate pairs, which S1 receives.
    unblocked = admits(records[0], records[1], s1.exhaustive, s1.small_member)
    matched = [m for m in s1.join(clks) if (m.member_a, m.member_b) == (0, 1) and not unblocked]
    opened = np.concatenate(
        [expanded_pairs(m, (seal_keys[0], seal_keys[1]), records) for m in matched]
        or [np.empty(0, np.uint64)]
    )
    codes, counts = np.unique(opened, return_counts=True)
    expanded = s2.expand(matched, clks)
    candidates = np.unique(np.concatenate(
        [(b.rows_a.astype(np.uint64) << np.uint64(32)) | b.rows_b.astype(np.uint64)
         for b in expanded] or [np.empty(0, np.uint64)]
    ))  # fmt: skip
    # C: the run (S1's proposal through the link-bit circuit, solving, completing, the links'
    # extras); C learns the linking pairs' rows and buckets, the extras' buckets and the reach
    # pairs' bits (two members: no group of three, so neither).
    # In the clear, C deals no triple (`_NoDeal`): nothing would read it.
    combiner = (_NoDeal if clear else Combiner)(
        None, threshold, clks=clks, rule=Rule(*rule) if rule and clks == 2 else NO_RULE
    )
    pops = [[np.asarray(p1, np.int64) ^ np.asarray(p2, np.int64)
             for p1, p2 in zip(u.s1.popcounts, u.s2.popcounts, strict=True)]
            for u in uploads] if clear else None  # fmt: skip
    servers = _Recording(s1, s2, combiner, pops)
    drive(servers, combiner)
    within = {
        f"S2 A:{clk}": reused_tokens(matched, seal_keys[0], records[0], clk) for clk in range(clks)
    }
    # The pairs of members S1 compares without blocking, as its proposal decides them
    # (core/exhaustive.py `propose`), said outright: an empty S1 or S2 view is no sign of it.
    whole = sorted(small_pairs([len(u.s1.shares[0]) for u in uploads], s1.exhaustive, None,
                               s1.small_member))  # fmt: skip
    views = {
        **within,
        "C": servers.view(),
        "S1": (_rows(candidates), np.zeros(len(candidates))),  # empty where unblocked
        "S2": (_rows(codes), counts.astype(np.float64)),
        NOT_BLOCKED: (np.array(whole, np.intp).reshape(-1, 2), np.zeros(len(whole))),
    }
    return views, ReachOracle(servers, combiner)


__all__ = ["NOT_BLOCKED", "ROLES", "Upload", "role_views", "views_and_oracle"]
