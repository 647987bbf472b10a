"""S1's and S2's `PrepareBlocks` and their `BlockExchange` (rpc/twoserver_blocks.py holds
what they keep; docs/protocol.md "A whole block by arithmetic sharing"): S2 holds C's deal;
S1 checks the deal against its proposal (an unblocked part, its blocks' sizes, the run's
cut-offs and rule), then the two convert each record's CLK bits, open the masked matrices
and check C's deal (core/densearith.py), S1 sending the blocks' rows first. A deal that
fails the checks is refused by both, naming the dealer, and audited (`twoserver.deal`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TypeVar

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import densearith, denseblock, linkbit, triplecheck
from blindmatch.matcher.core.linkbit import SEED_BYTES
from blindmatch.matcher.core.proposal import Refused
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.rpc import twoserver_standing as standing_calls
from blindmatch.matcher.rpc import twoserver_trim
from blindmatch.matcher.rpc.twoserver_blocks import (
    Stream,
    cut,
    joined,
    later_setup,
    proposed_part,
    s1_exchange,
    setups,
    shapes,
    widths,
)
from blindmatch.matcher.rpc.twoserver_margin import Dense, Pops, Runner, margin_plan, pops_bytes
from blindmatch.matcher.rpc.twoserver_margin import inputs as margin_inputs
from blindmatch.matcher.rpc.twoserver_margin import party as margin_party
from blindmatch.matcher.rpc.twoserver_peers import (
    ShareExchange,
    from_rows,
    to_rows,
)
from blindmatch.matcher.rpc.twoserver_role import Rows, _Role
from blindmatch.matcher.rpc.twoserver_uploads import Held, part_rule
from blindmatch.protos import blindmatch_pb2 as pb

T = TypeVar("T")


class _Sides:
    """This server's parties on the blocks of rows `sides` from C's `seeds`, built one at a
    time as the exchange reaches them (`party`): a block's arrays go once it has finished,
    its H shares kept in `done`."""

    def __init__(self, role: int, held: list[Held], m: pb.BlockDeal,
                 sides: list[tuple[Rows, Rows]], seeds: list[bytes]) -> None:  # fmt: skip
        self.role, self.held, self.m, self.sides = role, held, m, sides
        rule = part_rule(m, "blocks")
        # Each block's setup, its popcounts' (`margin`) last: cut when the block's turn comes
        # (`party`), so that no more than one block's is copied at a time.
        self.seeds, self.pop_sizes = seeds, pops_bytes(m, held[0].bits, rule, role)
        self.pop_seeds = [b""] * len(seeds)
        self.plan = None
        if m.margin:
            self.plan = margin_plan(held[0].bits, m.clk, m.cutoffs, rule, "blocks")
        # A block's nonce; with `margin`, its popcounts' conversion's after it.
        self.nonce_bytes = SEED_BYTES * (2 if m.margin else 1)
        self.nonces = [secrets.token_bytes(self.nonce_bytes) for _ in sides]
        self.done = denseblock.Blocks([], [], [])

    def pops(self, k: int, theirs: bytes) -> Pops | None:
        """Block `k`'s popcounts' conversion (`margin`; None without), once its own steps
        are done, agreed with the other's nonce of it."""
        if self.plan is None:
            return None
        got = Pops(self.role, self.plan, self.done.pops[k], self.pop_seeds[k],
                   self.nonces[k][SEED_BYTES:])  # fmt: skip
        self.pop_seeds[k] = b""
        try:
            got.party.agree(theirs)
        except ValueError as exc:
            raise errors.InvalidArgument(f"nonce: {exc}") from None
        return got

    def party(self, k: int) -> densearith.Party:
        if k:  # the block before's temporaries given back (rpc/twoserver_trim.py)
            twoserver_trim.trim()
        m, held = self.m, self.held
        clks = (0, 1) if len(widths(held[0].bits, m.clk, part_rule(m, "blocks"))) == 2 else (m.clk,)
        shares = tuple([h.shares[c] for c in clks] for h in held)
        pops = tuple([h.popshares[c] for c in clks] for h in held)
        setup, n = self.seeds[k], self.pop_sizes[k]
        if n:
            setup, self.pop_seeds[k] = setup[: len(setup) - n], setup[len(setup) - n :]
        try:
            got = denseblock.side(self.role, shares, pops, [self.sides[k]], [setup],
                                  [self.nonces[k][:SEED_BYTES]])  # fmt: skip
        except ValueError as exc:
            raise errors.InvalidArgument(f"setup: {exc}") from None
        self.seeds[k] = b""  # (read: S2's explicit values in place, by the party)
        self.done.sides += got.sides
        self.done.blocks += got.blocks
        self.done.pops += got.pops
        return got.blocks[0]


def dense_inputs(role: _Role, m: pb.CircuitBatch, rows_a: Rows, rows_b: Rows, run: str) -> Dense:
    """A batch naming blocks: this server's shares of its pairs' H and popcounts from its
    part's blocks held for run `run` (refused where none); None: a batch by pairs."""
    if not m.blocks:
        return None
    side = role.dense.side(m.blocks, m.member_a, m.member_b, m.part, run)
    try:
        if m.margin:  # the rule's margin (rpc/twoserver_margin.py)
            return margin_inputs(side, PairBatch(0, 1, m.clk, rows_a, rows_b))
        return side.inputs(PairBatch(0, 1, m.clk, rows_a, rows_b))
    except ValueError as exc:
        raise errors.InvalidArgument(f"rows_a/rows_b: {exc}") from None


def batch_party(
    role: _Role, who: int, held: list[Held], circuit: linkbit.Circuit, m: pb.CircuitBatch,
    rows_a: Rows, rows_b: Rows, dense: Dense, nonce: bytes | None = None,
) -> Runner:  # fmt: skip
    """This server's party on batch `m`: on `dense` (`dense_inputs`, or kept) where it
    names blocks (by the rule's margin where `margin`), else on the pairs' CLK shares."""
    if not m.blocks:
        return role.party(who, held, circuit, m.clk, rows_a, rows_b, m.setup, nonce)
    if dense is None:
        raise errors.FailedPrecondition(f"blocks: batch {m.batch!r}'s H shares are not kept")
    if m.margin:
        return margin_party(who, held[0].bits, circuit, dense, m.setup, nonce)
    if len(dense) != 2:
        raise errors.FailedPrecondition(f"blocks: batch {m.batch!r}'s kept shares are a margin's")
    w = widths(held[0].bits, m.clk, part_rule(m, "batch"))
    try:
        return denseblock.party_of(who, w, circuit, *dense, m.setup, nonce)
    except ValueError as exc:
        raise errors.InvalidArgument(f"setup: {exc}") from None


def s1_prepare(role: _Role, s2: ShareExchange, m: pb.BlockDeal) -> pb.BlocksReply:
    """S1's `PrepareBlocks`: the deal checked against its proposal, then the blocks' exchange
    with S2; S1 holds its side for the part's batches (a standing partner's deal:
    rpc/twoserver_standing.py)."""
    if m.standing:
        return standing_calls.s1_prepare(role, s2, m)
    held = role.pair_held(m)
    rule = part_rule(m, "blocks")
    blocks = shapes(m, held[0].bits, rule)
    seeds = setups(m, blocks, 0, m.setup, pops_bytes(m, held[0].bits, rule, 0))
    members = [m.member_a, m.member_b]
    with role.lock:

        def fits(sizes: tuple[tuple[int, int], ...]) -> None:
            if sizes != tuple(zip(m.rows_a, m.rows_b, strict=True)):
                raise Refused(f"rows_a/rows_b: not the sizes of part {m.part}'s blocks")

        proposal, part = proposed_part(role, m, rule, "blocks", m.clk, fits)
        sizes = denseblock.part_blocks(part)
        sides, run = denseblock.part_sides(part), proposal.id  # type: ignore[arg-type]
    kept = role.dense.put(m)
    try:
        built = _Sides(0, held, m, sides, seeds)
        first = pb.BlockMessage(
            blocks=m.blocks, checked=kept.checked, run=run,
            rows_a=b"".join(from_rows(a) for a, _ in sides),
            rows_b=b"".join(from_rows(b) for _, b in sides),
            nonce=b"".join(built.nonces),
        )  # fmt: skip
        try:
            sent, received = _exchange(s2, first, built)
        except triplecheck.DealRefused as exc:
            role.log("combiner", "twoserver.deal", members=members, blocks=m.blocks, run=run,
                     part=m.part, reason=str(exc))  # fmt: skip
            raise triplecheck.refused(f"{m.blocks} (part {m.part}'s blocks)", exc) from None
    except BaseException:
        role.dense.drop(m.blocks)
        raise
    kept.side, kept.run = built.done, run
    role.log("combiner", "twoserver.blocks", members=members, run=run, part=m.part,
             blocks=[list(s) for s in sizes], pairs=sum(a * b for a, b in sizes))  # fmt: skip
    return pb.BlocksReply(round_bytes_sent=sent, round_bytes_received=received,
                          largest_batch=linkbit.BLOCK_BATCH)  # fmt: skip


def _exchange(s2: ShareExchange, first: pb.BlockMessage,
              side: _Sides) -> tuple[int, int]:  # fmt: skip
    """S1's side of BlockExchange: the first message, S2's nonces, then each block's two
    messages each way; bytes sent and received."""

    def body(stream: Stream) -> None:
        got, n = stream.nxt(), side.nonce_bytes
        if got is None or len(got.nonce) != n * len(side.sides):
            raise errors.DataLoss(f"{s2.name}: no nonce for each block")
        for k in range(len(side.sides)):
            nonces = got.nonce[n * k : n * (k + 1)]
            p = side.party(k)
            p.agree(nonces[:SEED_BYTES])
            stream.send(p.convert())
            stream.send(p.reconcile(stream.read("a conversion")))
            p.finish(stream.read("an opening"))
            pops = side.pops(k, nonces[SEED_BYTES:])
            if pops is not None:  # the margin's: its records' popcounts converted
                stream.send(pops.first())
                pops.converted(stream.read("a popcount conversion"))
                stream.send(pops.digest())
                side.done.arith.append(pops.values(stream.read("a popcount check")))

    return s1_exchange(s2, first, body, "block exchange")


def s2_prepare(role: _Role, request: Iterator[pb.BlockDeal]) -> pb.PrepareReply:
    """S2's `PrepareBlocks`: C's deal, its setups in parts, checked to fit the blocks and
    held until S1 opens their exchange."""
    first = next(request, None)
    if first is None or first.setup or not first.blocks:
        raise errors.InvalidArgument("blocks: the first message names them, without setup")
    if first.standing:  # a standing partner's (rpc/twoserver_standing.py)
        return standing_calls.s2_prepare(role, first, request)
    held = role.pair_held(first)
    rule = part_rule(first, "blocks")
    blocks = shapes(first, held[0].bits, rule)
    pops = pops_bytes(first, held[0].bits, rule, 1)  # checked before any setup is read
    whole = later_setup(request)
    setups(first, blocks, 1, whole, pops)
    role.dense.put(first, whole)
    return pb.PrepareReply(largest_batch=linkbit.BLOCK_BATCH)


def _rows(first: pb.BlockMessage, m: pb.BlockDeal) -> list[tuple[np.ndarray, np.ndarray]]:
    """S1's first message's rows of each block, checked: the deal's sizes, ascending, each
    within the records."""
    out: list[list[np.ndarray]] = [[], []]
    sets = ((first.rows_a, m.rows_a, m.records_a), (first.rows_b, m.rows_b, m.records_b))
    for k, (data, sizes, records) in enumerate(sets):
        rows = to_rows(data, ("rows_a", "rows_b")[k])
        if len(rows) != sum(sizes):
            raise errors.InvalidArgument(f"rows: {len(rows)} rows, the blocks' {sum(sizes)}")
        at = 0
        for n in sizes:
            block = rows[at : at + n]
            at += n
            if (n > 1 and not (np.diff(block.astype(np.int64)) > 0).all()) or block[-1] >= records:
                raise errors.InvalidArgument("rows: a block's rows ascending, within the records")
            out[k].append(block)
    return list(zip(out[0], out[1], strict=True))


def s2_exchange(role: _Role, request: Iterator[pb.BlockMessage]) -> Iterator[pb.BlockMessage]:
    """S2's side of BlockExchange (S1's first message opens blocks C prepared on S2)."""
    first = next(request, None)
    if first is None:
        raise errors.InvalidArgument("a block exchange of no messages")
    kept = role.dense.take(first.blocks)
    if kept.deal.standing:  # a standing partner's (rpc/twoserver_standing.py)
        yield from standing_calls.s2_exchange(role, kept, first, request)
        return
    try:
        m = kept.deal
        if first.checked != kept.checked:
            raise errors.PermissionDenied(
                f"checked: blocks {first.blocks!r} as S1 checked them are not the blocks the "
                "combiner prepared on S2 (another part, members, sizes or cut-offs)"
            )
        held = role.pair_held(m)
        blocks = shapes(m, held[0].bits, part_rule(m, "blocks"))
        pops = pops_bytes(m, held[0].bits, part_rule(m, "blocks"), 1)
        built = _Sides(1, held, m, _rows(first, m), setups(m, blocks, 1, kept.setup, pops))
        kept.setup = b""  # (S2's setups held once: each block's, read in place by its party)
        n = built.nonce_bytes
        if len(first.nonce) != n * len(blocks):
            raise errors.InvalidArgument(f"nonce: {n} bytes a block")
        yield pb.BlockMessage(nonce=b"".join(built.nonces))

        def nxt() -> pb.BlockMessage | None:
            return next(request, None)

        def refused(exc: triplecheck.DealRefused) -> errors.PermissionDenied:
            role.log("combiner", "twoserver.deal", members=[m.member_a, m.member_b],
                     blocks=first.blocks, run=first.run, part=m.part,
                     reason=str(exc))  # fmt: skip
            return triplecheck.refused(f"{first.blocks} (part {m.part}'s blocks)", exc)

        for k in range(len(blocks)):
            nonces = first.nonce[n * k : n * (k + 1)]
            p = built.party(k)
            p.agree(nonces[:SEED_BYTES])
            for data, last in cut(p.convert()):
                yield pb.BlockMessage(data=data, last=last)
            try:
                theirs = p.reconcile(joined(nxt, "a conversion"))
            except ValueError as exc:
                raise errors.InvalidArgument(f"data: {exc}") from None
            for data, last in cut(theirs):
                yield pb.BlockMessage(data=data, last=last)
            try:
                p.finish(joined(nxt, "an opening"))
            except ValueError as exc:
                raise errors.InvalidArgument(f"data: {exc}") from None
            except triplecheck.DealRefused as exc:
                raise refused(exc) from None
            conv = built.pops(k, nonces[SEED_BYTES:])
            if conv is None:
                continue
            for data, last in cut(conv.first()):  # the margin's: the popcounts converted
                yield pb.BlockMessage(data=data, last=last)
            try:
                conv.converted(joined(nxt, "a popcount conversion"))
            except ValueError as exc:
                raise errors.InvalidArgument(f"data: {exc}") from None
            for data, last in cut(conv.digest()):
                yield pb.BlockMessage(data=data, last=last)
            try:
                built.done.arith.append(conv.values(joined(nxt, "a popcount check")))
            except ValueError as exc:
                raise errors.InvalidArgument(f"data: {exc}") from None
            except triplecheck.DealRefused as exc:
                raise refused(exc) from None
    except BaseException:
        role.dense.drop(first.blocks)
        raise
    kept.side, kept.run = built.done, first.run
    role.log(
        "s1",
        "twoserver.blocks",
        members=[m.member_a, m.member_b],
        run=first.run,
        part=m.part,
        blocks=[[a, b] for a, b in zip(m.rows_a, m.rows_b, strict=True)],
    )
    yield pb.BlockMessage(last=True)  # held: S1 may send the part's batches


__all__ = ["batch_party", "dense_inputs", "s1_prepare", "s2_exchange", "s2_prepare"]
