"""A run on two non-colluding servers and a combiner (docs/privacy-design.md, options a + b).

The three roles, as plain objects over arrays, each given only what it receives in the
design (matcher/rpc/twoserver_service.py puts each behind a gRPC service of its own):

- `BlockingServer` (S1): every member's sealed band keys (client/encoding/sharing.py
  `seal_bands`: each band's distinct keys once, each with its rows as tokens only S2 can open),
  the first XOR share of each CLK and of its popcount, and which records lack the fallback's
  fields. `join` matches the keys of each pair of members band by band and pairs the matched
  keys' tokens (core/twoblocking.py); for a batch of pairs, `party` is its side of the
  link-bit circuit (core/linkbit.py) on each pair's share difference, and `messages` (the Dice
  oracle's) each pair's share difference with its bits permuted (core/sharing.py
  `pair_messages`).
- `ShareServer` (S2): the second XOR shares and each upload's seal key; `expand` opens the
  tokens S1 paired into each CLK's pairs sharing a key, which S1's `fallback_split` turns into
  the proposal; `party` and `messages` as S1's.
- `Combiner` (C): never a CLK nor a share. With `reveal="link-bit"` (the default) C deals
  the circuit's generic triples (the circuit tests the kernel's rule on the servers' shares
  of the CLKs and of their popcounts, at public cut-offs: core/linkbit.py) and learns from the
  servers' output shares each pair's link bit (and, with `buckets`, which cut-offs above the
  threshold its Dice reaches) and, for a pair of S1's proposal, its rows only if it links;
  S1 and S2 exchange masked gate inputs, a round an AND-depth (core/tworun.py). It needs no
  popcount (the in-process tests give it them for the Dice oracle and `lacking`). With
  `reveal="dice"`, the stepping stone kept as the tests' oracle, `decide` XORs the servers'
  permuted differences and learns each pair's exact Dice (an attack on that view crosses the
  bar: docs/privacy-design.md). Either way C keeps the pairs by the kernel's own test (same
  popcount pre-filter, same float64 score); the run's candidates are then solved and turned
  into links as a normal run's are (core/solve.py), a link-bit candidate scored by the lower
  end of its bucket (the threshold without buckets), so the links' scores are bounds, not
  Dice values.

core/tworun.py `run` drives them: S1 joins, S2 expands, S1 splits the pairs by which records
lack the fallback CLK's left-out fields (what the members told it), S1 and S2 run the
circuit on the parts of S1's proposal (or send messages) batch by batch, C decides, solves,
and scores the links inside each group (a few more pairs through S1 and S2, checked by
core/proposal.py: a group of three members holds a pair blocking may not have proposed).

With a fallback CLK (schema `blindmatch.fallback`) every record's two CLKs are shared and
blocked the same way, each with band keys and shares of its own (CLK 0 the record-level one,
CLK 1 the fallback), and a pair is compared on the CLK the normal run scores it by
(`fallback.on_fallback`): blocking proposes record-level pairs between records that both have
the left-out fields, and fallback pairs where either lacks them. So with blocking that misses
no pair at or above the threshold the links are exactly the exhaustive run's
(tests/test_twoserver.py); with keyed blocking at r=20 the cost is the pairs blocking misses:
none in F1 on the benchmark's cells of 20,000-50,000 people (benchmarks/twoserver_quality.py,
docs/privacy-design.md).

What each role learns here beyond the design's option (b): S1 which records lack the
left-out fields, one bit a record the normal matcher reads from the popcounts too; S1 and S2
the candidate pairs (S2 expands them, S1 keeps the proposal and evaluates it) and which pairs
inside matched groups C asks about (they are sent through the circuit to score the links);
S2 each candidate's count of shared bands (core/twoblocking.py); C those pairs' link bits
(buckets), or with the Dice oracle their exact Dice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import denseblock, linkbit
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.crosspart import Cross
from blindmatch.matcher.core.exhaustive import check_cap
from blindmatch.matcher.core.gmwrule import rule_circuit
from blindmatch.matcher.core.kernel import _check_threshold
from blindmatch.matcher.core.recordblocking import colliding_pairs, record_blocking
from blindmatch.matcher.core.sharing import pair_messages
from blindmatch.matcher.core.solve import BRIDGE, REACH
from blindmatch.matcher.core.twoblocking import (
    FALLBACK,
    RECORD,
    TOKEN_BYTES,
    Keys,
    Matched,
    PairBatch,
    Rows,
    Sealed,
    SealedLike,
    Shares,
    expand,
    fallback_split,
    join,
)
from blindmatch.matcher.domain import NO_RULE, Rule

Popcounts = npt.NDArray[np.int64]
PopShares = npt.NDArray[np.uint32]  # a server's XOR shares of popcounts

BATCH_PAIRS = 100_000  # pairs a message batch (memory: 2 x this x the CLK's bytes)


@dataclass(frozen=True)
class Proposed:
    """What C learns of a part of S1's proposal: its members, CLK and number of pairs, never
    the pairs (S1 keeps them, in an order of its own: core/proposal.py)."""

    member_a: int
    member_b: int
    clk: int
    pairs: int
    # An unblocked part's blocks (rows of A x rows of B, each non-empty) where S1 and S2 run
    # it by arithmetic sharing (core/densearith.py; core/twoinprocess.py, rpc/twoserver_blocks.py):
    # their sizes, which C deals for (it can count them from the popcounts it holds).
    blocks: tuple[tuple[int, int], ...] = ()
    # A query's unblocked part against its partner's bits converted once (core/partpath.py
    # `for_query`; core/standing.py, rpc/twoserver_standing.py): C's choice, not S1's.
    standing: bool = False


class ShareServer:
    """S2 (and S1's share side): one XOR share of each member's CLKs, `shares[member][clk]`,
    the key the two servers share for the pairs' permutations, and (S2) each member's seal
    key, which opens the rows S1 forwards."""

    def __init__(
        self,
        shares: Sequence[Sequence[Shares]],
        pair_key: bytes,
        popcounts: Sequence[Sequence[PopShares]] | None = None,
        seal_keys: Sequence[bytes] = (),
    ) -> None:
        self._shares = [[np.ascontiguousarray(s, dtype=np.uint8) for s in m] for m in shares]
        self._key = pair_key
        self._seal = list(seal_keys)
        # This server's XOR shares of each record's popcount (the link-bit circuit's input).
        self._pops = [[np.asarray(p, dtype=np.uint32) for p in m] for m in popcounts or ()]
        if self._pops and len(self._pops) != len(self._shares):
            raise ValueError("popcount shares and CLK shares of different numbers of members")

    def bits(self, clk: int) -> int:
        """The width of CLK `clk` in bits (public: the schema's)."""
        return 8 * int(self._shares[0][clk].shape[1])

    def records(self) -> list[int]:
        """Each member's number of records."""
        return [len(m[0]) for m in self._shares]

    def expand(self, matched: Iterable[Matched], clks: int = 1) -> list[PairBatch]:
        """The pairs of rows sharing a key in at least one band, from what S1 matched
        (core/twoblocking.py `expand`)."""
        if not self._seal:
            raise ValueError("S2 holds no seal keys")
        return expand(matched, self._seal, self.records(), clks)

    def differences(self, batch: PairBatch) -> Shares:
        """(pairs, width): each pair's share difference, unpermuted (the link-bit step's
        input: S1's and S2's XOR to a ^ b, which neither holds)."""
        a = self._shares[batch.member_a][batch.clk][batch.rows_a]
        out: Shares = a ^ self._shares[batch.member_b][batch.clk][batch.rows_b]
        return out

    def party(
        self, role: int, batch: PairBatch, circuit: linkbit.Circuit, setup: bytes,
        nonce: bytes | None = None,
    ) -> linkbit.Party:  # fmt: skip
        """This server's side of the link-bit circuit on `batch`, from C's `setup`: its
        shares of each pair's a ^ b and of |a| and |b|; for the gap rule's circuit (a batch
        on the first CLKs: core/gmwrule.py), of both CLKs' a ^ b and of the four popcounts.
        `nonce`: the one this server drew for the batch (a batch run again on its kept
        inputs); None: fresh."""
        if not self._pops:
            raise ValueError("the link-bit circuit needs the popcount shares")
        clks: tuple[int, ...] = (batch.clk,)
        if circuit.n_bits2:
            if batch.clk != RECORD or len(self._shares[0]) < 2:
                raise ValueError("the rule's circuit: a batch on the first of two CLKs")
            clks = (RECORD, FALLBACK)
        pops = [
            self._pops[member][clk][rows]
            for clk in clks
            for member, rows in ((batch.member_a, batch.rows_a), (batch.member_b, batch.rows_b))
        ]
        diffs = [self.differences(dataclasses.replace(batch, clk=clk)) for clk in clks]
        both = (diffs[0], diffs[1]) if len(diffs) == 2 else diffs[0]
        return linkbit.Party(role, circuit, both, setup, pops, nonce)

    def block_side(self, role: int, part: Cross, clks: Sequence[int],
                   setups: Sequence[bytes]) -> denseblock.Blocks:  # fmt: skip
        """This server's parties on the non-empty blocks of unblocked `part` (rows of A x
        rows of B) on CLKs `clks`, from C's setups (core/denseblock.py `side`)."""
        sides = denseblock.part_sides(part)
        shares = tuple([self._shares[m][k] for k in clks] for m in (part.member_a, part.member_b))
        pops = tuple([self._pops[m][k] for k in clks] for m in (part.member_a, part.member_b))
        return denseblock.side(role, shares, pops, sides, setups)

    def messages(self, batch: PairBatch) -> Shares:
        """(pairs, width): each pair's share difference, permuted (core/sharing.py): the
        Dice-revealing step's message to C."""
        return pair_messages(
            self._shares[batch.member_a][batch.clk],
            self._shares[batch.member_b][batch.clk],
            batch.member_a,
            batch.member_b,
            batch.rows_a,
            batch.rows_b,
            self._key,
        )


class BlockingServer(ShareServer):
    """S1: S2's part (no seal keys), every member's sealed band keys, `bands[member][clk]`
    (`Sealed`: each band's distinct keys, each with its rows sealed for S2), and which of
    each member's records lack the fallback's fields, as the members told S1; `dummies`: the
    dummy pairs of tokens its join adds, a share of the real ones (0: none, the default);
    `exhaustive`: the cap of pairs under which a pair of members is not blocked
    (core/exhaustive.py; 0, the default here: every pair blocked); `small_member`: the
    smaller-member cap (core/exhaustive.py `admits`; 0, the default here: none)."""

    def __init__(
        self,
        bands: Sequence[Sequence[SealedLike]],
        shares: Sequence[Sequence[Shares]],
        pair_key: bytes,
        popcounts: Sequence[Sequence[PopShares]] | None = None,
        lacking: Sequence[npt.NDArray[np.bool_]] | None = None,
        dummies: float = 0.0,
        exhaustive: int = 0,
        small_member: int = 0,
    ) -> None:
        super().__init__(shares, pair_key, popcounts)
        # A pair of members of at most this many pairs compared without blocking: every pair
        # proposed, no join (core/exhaustive.py; 0: every pair of members blocked).
        self.exhaustive = check_cap(exhaustive)
        self.small_member = check_cap(small_member, "small member pairs")
        if not 0.0 <= dummies <= 100.0:
            raise ValueError(f"dummies: {dummies} (a share of the real pairs, 0 to 100)")
        self.dummies = dummies
        self.lacking = [np.asarray(x, bool) for x in lacking] if lacking is not None else None
        # An upload's own `Sealed` kept (its sorted keys are kept with it for the next join).
        self._bands = [[b if isinstance(b, Sealed) else Sealed(b.counts, b.keys, b.classes,
                                                               b.sealed) for b in m]
                       for m in bands]  # fmt: skip
        if len(self._bands) != len(shares):
            raise ValueError("S1: band keys and shares of different numbers of members")

    def join(
        self, clks: int | None = None, pairs: Collection[tuple[int, int]] | None = None
    ) -> Iterator[Matched]:
        """Per pair of members (those in `pairs`, the first lower; None: every one) and CLK
        (the first `clks`; None: every one), the keys both hold in a band with their sealed
        rows, shuffled, with the server's dummy pairs of tokens (core/twoblocking.py `join`).
        Each joined when the one before it has been taken: S1 streams each to S2 as it is
        made and holds one at a time (a list held every one's tokens, 32 bytes a pair of
        them, to the last: docs/performance.md "S1's memory at a run's start (2026-12-06)")."""
        members = len(self._bands)
        joins = [(x, y, clk) for x in range(members) for y in range(x + 1, members)
                 if pairs is None or (x, y) in pairs
                 for clk in range(len(self._bands[x]) if clks is None else clks)]  # fmt: skip
        for x, y, clk in joins:  # refused here, not when S2 takes the first (`matched_keys`)
            if len(self._bands[x][clk].counts) != len(self._bands[y][clk].counts):
                raise ValueError("sealed band keys with different numbers of bands")
        return self._joined(joins)

    def _joined(self, joins: list[tuple[int, int, int]]) -> Iterator[Matched]:
        for x, y, clk in joins:  # the tokens' mapped pages dropped once read (`drop_tokens`)
            a, b = self._bands[x][clk], self._bands[y][clk]
            m = join(x, y, clk, a, b, dummies=self.dummies)
            a.drop_tokens()
            b.drop_tokens()
            yield m
            del m

    def propose(self, expanded: Sequence[PairBatch]) -> list[PairBatch]:
        """The pairs to compare from S2's expansion, by the fallback's rule on the records
        lacking its fields (core/twoblocking.py `fallback_split`)."""
        return fallback_split(expanded, self.lacking)


def default_buckets(threshold: float) -> tuple[float, ...]:
    """Three cut-offs evenly between the threshold and 1 (0.85, 0.9, 0.95 at 0.8): with the
    link bit alone the solver has no order and F1 drops (0.9906 -> 0.9873 on `messy`, 20,000
    people); with these it is the Dice run's (benchmarks/twoserver_quality.py)."""
    return tuple(round(threshold + k * (1 - threshold) / 4, 6) for k in (1, 2, 3))


def bridge_cutoff(cutoffs: Sequence[float]) -> float | None:
    """The lowest of a run's buckets at or above threshold + solve.BRIDGE (0.85 at 0.8): a
    link in it may join two of C's groups; None without one (no completion)."""
    above = [c for c in cutoffs[1:] if c >= round(cutoffs[0] + BRIDGE, 6)]
    return min(above) if above else None


def reach_cutoff(cutoffs: Sequence[float]) -> float | None:
    """The run's reach cut-off, threshold - solve.REACH (0.7 at 0.8), where it completes
    groups (a bridge bucket, `bridge_cutoff`), else None: a constant of the threshold, never
    C's choice."""
    if not cutoffs or bridge_cutoff(cutoffs) is None:
        return None
    return round(cutoffs[0] - REACH, 6)


class Combiner:
    """C: each member's popcounts, `popcounts[member][clk]`, and the threshold.

    `reveal` is what C learns of a pair: "link-bit" (the default) its link bit from the
    servers' circuit (core/linkbit.py) and, with `buckets` (cut-offs above the threshold;
    `default_buckets` unless given, () for the link bit alone), the highest cut-off its Dice
    reaches; "dice" its exact Dice from the servers' permuted
    differences (the stepping stone and the test oracle: docs/privacy-design.md measured that
    this view leaks). With link bits a candidate's score, for the solver and in the links, is
    the lower end of its bucket: the threshold, or the highest cut-off reached; a pair inside
    a group that does not reach the threshold scores 0.0 (C learns only that)."""

    def __init__(
        self,
        popcounts: Sequence[Sequence[Popcounts]] | None,
        threshold: float,
        *,
        reveal: str = "link-bit",
        buckets: Sequence[float] | None = None,
        clks: int = 1,
        rule: Rule = NO_RULE,
        complete: bool = True,
    ) -> None:
        self._pops = [[np.asarray(p, dtype=np.int64) for p in m] for m in popcounts or ()]
        if popcounts is None and reveal == "dice":
            raise ValueError("the Dice oracle needs the popcounts")
        self.threshold = _check_threshold(threshold)
        if not self.threshold > 0:
            raise ValueError("the two-server run needs a positive threshold")
        if reveal not in ("link-bit", "dice"):
            raise ValueError(f"C reveals 'link-bit' or 'dice', not {reveal!r}")
        self.reveal = reveal
        if buckets is None:
            buckets = default_buckets(self.threshold) if reveal == "link-bit" else ()
        cuts = sorted({_check_threshold(b) for b in buckets})
        if cuts and (cuts[0] <= self.threshold or reveal == "dice"):
            raise ValueError("score buckets: cut-offs above the threshold, with link bits")
        self.cutoffs = (self.threshold, *cuts)
        held = {len(m) for m in self._pops} if popcounts is not None else {clks}
        if len(held) > 1:
            raise ValueError("C: every member must upload the same CLKs")
        self.has_fallback = held == {2}
        # The schema's gap rule (core/gmwrule.py): a pair on the first CLKs is tested on both.
        self.rule = rule if rule.active else NO_RULE
        if self.rule.active and (not self.has_fallback or reveal != "link-bit"):
            raise ValueError("the gap rule: link bits on uploads with a fallback CLK")
        # Completing groups (core/twocomplete.py): a link in the bridge bucket joins two groups
        # when every pair between them reaches the reach cut-off; None: the run does not.
        self.bridge = bridge_cutoff(self.cutoffs) if complete and reveal == "link-bit" else None
        self.reach = reach_cutoff(self.cutoffs) if self.bridge is not None else None

    def lacking(self) -> list[npt.NDArray[np.bool_]] | None:
        """Each member's records lacking the fallback's fields (fallback.py's rule), from
        the popcounts where C holds them (the in-process runs of the tests); None without a
        fallback CLK or without popcounts (S1 holds them from the members: core/proposal.py
        drops the pairs C names on the other CLK)."""
        if not self.has_fallback or not self._pops:
            return None
        return [fallback_.lacking_from_popcounts(m[RECORD], m[FALLBACK]) for m in self._pops]

    def scores(self, batch: PairBatch, m1: Shares, m2: Shares) -> npt.NDArray[np.float64]:
        """Each pair's Dice from the two servers' messages: 2|a & b| / (|a| + |b|) as the
        kernel computes it, |a| + |b| - Hamming being 2|a & b|; 0 for two empty CLKs."""
        if m1.shape != m2.shape or len(m1) != len(batch):
            raise ValueError("C: the two servers' messages differ in shape")
        hamming = np.bitwise_count(m1 ^ m2).sum(axis=1, dtype=np.int64)
        total = (
            self._pops[batch.member_a][batch.clk][batch.rows_a]
            + (self._pops[batch.member_b][batch.clk][batch.rows_b])
        )
        out = np.zeros(len(batch), dtype=np.float64)
        np.divide((total - hamming).astype(np.float64), total, out=out, where=total > 0)
        return out

    def decide(self, batch: PairBatch, m1: Shares, m2: Shares) -> Candidates:
        """The batch's pairs at or above the threshold, by the kernel's test: anonlink's
        popcount pre-filter |pa - pb| <= int(2 pa (1/t - 1)), then Dice >= t."""
        sims = self.scores(batch, m1, m2)
        pa = self._pops[batch.member_a][batch.clk][batch.rows_a]
        pb = self._pops[batch.member_b][batch.clk][batch.rows_b]
        width = 8 * m1.shape[1] if m1.ndim == 2 else 0
        delta = np.minimum((2 * pa).astype(np.float64) * (1.0 / self.threshold - 1.0), width)
        keep = (np.abs(pa - pb) <= delta.astype(np.int64)) & (sims >= self.threshold) & (pa > 0)
        n = int(keep.sum())
        return Candidates(
            sims[keep],
            np.full(n, batch.member_a, dtype=np.uint32),
            np.full(n, batch.member_b, dtype=np.uint32),
            batch.rows_a[keep].astype(np.uint32),
            batch.rows_b[keep].astype(np.uint32),
        )

    def deal(
        self, batch: PairBatch, n_bits: int, n_bits2: int = 0
    ) -> tuple[linkbit.Circuit, linkbit.Deal]:
        """The link-bit circuit for the batch (the kernel's test at the run's cut-offs, or
        on the first CLKs with a gap rule the rule's, public constants of the circuit) and
        C's messages to S1 and S2: generic triples, nothing that depends on the pairs."""
        return self.deal_count(len(batch), n_bits, batch.clk, n_bits2)

    def circuit(self, n_bits: int, clk: int = RECORD, n_bits2: int = 0) -> linkbit.Circuit:
        """The run's circuit for pairs on CLK `clk` (`n_bits` wide; `n_bits2`: the
        fallback's width, which the rule's circuit reads too)."""
        if self.rule.active and clk == RECORD:
            if not n_bits2:
                raise ValueError("the gap rule's circuit needs the fallback CLK's width")
            return rule_circuit(n_bits, n_bits2, self.cutoffs, self.rule)
        return linkbit.circuit(n_bits, self.cutoffs)

    def reach_circuit(self, n_bits: int, clk: int = RECORD, n_bits2: int = 0) -> linkbit.Circuit:
        """The circuit of a reach batch: the run's test (`circuit`) at the reach cut-off
        alone, one output bit a pair."""
        if self.reach is None:
            raise ValueError("the run completes no groups (no reach cut-off)")
        if self.rule.active and clk == RECORD:
            return rule_circuit(n_bits, n_bits2, (self.reach,), self.rule)
        return linkbit.circuit(n_bits, (self.reach,))

    def deal_count(
        self, pairs: int, n_bits: int, clk: int = RECORD, n_bits2: int = 0
    ) -> tuple[linkbit.Circuit, linkbit.Deal]:
        """`deal` for a batch of `pairs` pairs C cannot name (a part of S1's proposal)."""
        circuit = self.circuit(n_bits, clk, n_bits2)
        return circuit, self.triples(circuit, pairs)

    def triples(self, circuit: linkbit.Circuit, pairs: int) -> linkbit.Deal:
        """C's deal of `circuit`'s triples for a batch of `pairs` pairs (linkbit.deal): every
        deal of the run goes through here (a part of S1's proposal, C's own pairs, a reach
        batch, core/twocomplete.py)."""
        return linkbit.deal(circuit, pairs)

    def bucket_scores(self, bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        """(pairs,): the highest cut-off each pair reaches, 0.0 for none (bits: (cut-offs,
        pairs), monotone down the cut-offs)."""
        reached = bits.sum(axis=0)
        out: npt.NDArray[np.float64] = np.asarray((0.0, *self.cutoffs))[reached]
        return out


__all__ = [
    "FALLBACK",
    "RECORD",
    "TOKEN_BYTES",
    "BlockingServer",
    "Combiner",
    "Keys",
    "Matched",
    "PairBatch",
    "Proposed",
    "Rows",
    "Sealed",
    "ShareServer",
    "Shares",
    "colliding_pairs",
    "fallback_split",
    "join",
    "record_blocking",
]
