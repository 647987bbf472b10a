"""An unblocked part's batches by the rule's margin over gRPC (core/densemargin.py,
core/marginrounds.py; docs/protocol.md "The rule's margin by arithmetic"): S1's and S2's
checks of C's `margin` batches and deals, each block's records' popcounts turned into
additive shares in `BlockExchange` (`Pops`, after the block's own steps), a batch's inputs
from its part's blocks (`inputs`) and its side (`party`), driven through the same rounds,
kept inputs and replays as any batch (rpc/twoserver_shares.py, rpc/twoserver_resume.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import denseblock, densemargin, linkbit, ring64
from blindmatch.matcher.core.margincircuit import Plan, plan
from blindmatch.matcher.core.marginrounds import Rounds
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.protos import blindmatch_pb2 as pb

U64 = npt.NDArray[np.uint64]
Runner = linkbit.Party | Rounds  # a server's side of a batch, as the rounds drive it
Dense = tuple[npt.NDArray[Any], ...] | None  # a batch's shares from its part's blocks


def margin_plan(bits: Sequence[int], clk: int, cutoffs: Sequence[float], rule: Rule,
                where: str) -> Plan:  # fmt: skip
    """The margin's plan of a part on `clk` under `rule` (`InvalidArgument` where the part
    does not read both CLKs under a rule, or the rule's margin does not fit 2^64)."""
    if not rule.active or clk != 0 or len(bits) != 2:
        raise errors.InvalidArgument(
            f"margin ({where}): a part on clk 0 of uploads with a fallback CLK, under a rule"
        )
    try:
        return plan(bits[0], bits[1], tuple(float(c) for c in cutoffs), rule)
    except ValueError as exc:
        raise errors.InvalidArgument(f"margin ({where}): {exc}") from None


def margin_batch(role: str, m: pb.CircuitBatch, bits: Sequence[int], cutoffs: Sequence[float],
                 rule: Rule, count: int) -> linkbit.Circuit:  # fmt: skip
    """A `margin` batch checked (a batch of the proposal naming blocks, C's setup of the
    margin's size for server `role`): the second circuit, whose outputs C reveals."""
    if not m.blocks or not m.proposed or m.reach:
        raise errors.InvalidArgument("margin: a batch of the proposal naming its blocks only")
    p = margin_plan(bits, m.clk, cutoffs, rule, "batch")
    want = sum(densemargin.setup_sizes(p, 0 if role == "s1" else 1, count))
    if len(m.setup) != want:
        raise errors.InvalidArgument(
            f"setup: the margin: {len(m.setup):,} bytes, {role.upper()}'s deal of {count} "
            f"pairs is {want:,}"
        )
    return p.second


def pops_bytes(m: pb.BlockDeal, bits: Sequence[int], rule: Rule, role: int) -> list[int]:
    """The setup of each block's popcounts' daBits for server `role` (none without
    `margin`)."""
    if not m.margin:
        return [0] * len(m.rows_a)
    p = margin_plan(bits, m.clk, m.cutoffs, rule, "blocks")
    return [densemargin.pops_size(p, a + b).setup_bytes[role]
            for a, b in zip(m.rows_a, m.rows_b, strict=True)]  # fmt: skip


class Pops:
    """A server's conversion of a block's records' popcounts (`xor[clk]`, A's rows then B's)
    into additive shares mod 2^64 (core/densemargin.py `convert_pops`), message by message:
    `first`, `converted` (the other's first), `digest`, `values` (the other's digest:
    `DealRefused` where C's daBits fail the check)."""

    def __init__(self, role: int, p: Plan, xor: Sequence[npt.NDArray[np.integer]],
                 setup: bytes, nonce: bytes) -> None:  # fmt: skip
        self.plan, self.records = p, len(xor[0])
        size = densemargin.pops_size(p, self.records)
        try:
            self.party = ring64.Party(role, size, setup, nonce)
        except ValueError as exc:
            raise errors.InvalidArgument(f"setup: {exc}") from None
        self._bits = densemargin.pop_bits(p, xor).ravel()
        self._got: U64 | None = None

    def first(self) -> bytes:
        return self.party.first(self._bits)

    def converted(self, theirs: bytes) -> None:
        self._got = self.party.converted(theirs)

    def digest(self) -> bytes:
        empty = np.zeros(0, np.uint64)
        return self.party.second(empty, empty)

    def values(self, theirs: bytes) -> list[U64]:
        self.party.products(theirs)
        assert self._got is not None
        return densemargin.pop_values(self.plan, self._got, self.records)


def inputs(side: denseblock.Blocks, batch: PairBatch) -> tuple[U64, U64, U64]:
    """A margin batch's shares from its part's blocks (core/densemargin.py `gather`): H1 and
    H2, the four popcounts' XOR and additive shares, (rows, pairs) each."""
    if len(side.arith) != len(side.blocks):
        raise errors.FailedPrecondition(
            "margin: the part's blocks were prepared without the margin (BlockDeal.margin)"
        )
    h, xor, arith = densemargin.gather(side, side.arith, batch)
    return np.vstack(h), np.vstack(xor), np.vstack(arith)


def party(who: int, bits: Sequence[int], circuit: linkbit.Circuit, dense: Dense, setup: bytes,
          nonce: bytes | None = None) -> Rounds:  # fmt: skip
    """Server `who`'s side of a margin batch on its `inputs` (or kept), from C's setup."""
    if dense is None or len(dense) != 3:
        raise errors.FailedPrecondition("margin: a batch's shares are not its part's margin's")
    p = plan(bits[0], bits[1], circuit.cutoffs, circuit.rule or NO_RULE)
    h, xor, arith = dense
    try:
        side = densemargin.Side(who, p, (h[0], h[1]), list(xor), list(arith), setup, nonce)
    except ValueError as exc:
        raise errors.InvalidArgument(f"setup: {exc}") from None
    return Rounds(side)


__all__ = ["Dense", "Pops", "Runner", "inputs", "margin_batch", "margin_plan", "party",
           "pops_bytes"]  # fmt: skip
