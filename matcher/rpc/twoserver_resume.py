"""S1's and S2's `Resume` and `Acknowledge` (rpc/twoserver_service.py, rpc/twoserver_shares.py
serve them; core/batchkeep.py keeps the batches): a batch of the proposal C lost the answer
of, asked again by its id alone, answered with the output shares the server gave the first
time, nothing evaluated or counted again; a batch C acknowledges is dropped. Every `Resume`,
granted or refused, is audited (`twoserver.resume`).

A batch cut during its rounds (S1 or S2 down: no output shares exist yet) is run again on
the inputs both servers kept before its rounds (`keep_inputs`; S1: C's batch to S1 and S1's
first message to S2, with S1's nonce; S2: C's batch to S2, that first message and S2's
nonce): S1's `Resume` sends S2 the same first message marked `replay` (`rerun`), S2 checks
it is the one it kept and both run the rounds on the same rows, setups, pad and nonces, so
the output shares are the bytes the first run would have given: a replay, nothing new to C
(docs/privacy-design.md "Resuming a pair of members a failure cut")."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import triplecheck
from blindmatch.matcher.core.batchkeep import Gone, Kept, pack, unpack
from blindmatch.matcher.core.crosspart import Cross
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.rpc.twoserver_blockcalls import batch_party
from blindmatch.matcher.rpc.twoserver_blocks import from_kept
from blindmatch.matcher.rpc.twoserver_peers import ShareExchange, to_rows
from blindmatch.matcher.rpc.twoserver_role import NAMES, Bools, _outputs, _Role
from blindmatch.protos import blindmatch_pb2 as pb


def kept(m: pb.CircuitBatch) -> bool:
    """Whether a batch is kept for a re-ask: a batch of the proposal, not a query's."""
    return m.proposed and QUERY_MARK not in m.member_a + m.member_b


def keep_inputs(role: _Role, m: pb.CircuitBatch, pairs: int, *parts: bytes) -> None:
    """Keep what fixes a batch's rounds (durably with a data dir), before the rounds: its
    pairs counted already, so that a batch cut during them can be run again on the same."""
    if kept(m):
        role.inputs.put(Kept(m.batch, (m.member_a, m.member_b), pairs, pack(*parts)))


def reused(role: _Role, batch: str) -> None:
    """Refuse a batch id the server holds a kept batch of (a batch id names one batch)."""
    if role.batches.has(batch) or role.inputs.has(batch):
        raise errors.InvalidArgument(f"batch: {batch!r} was evaluated here already; a batch "
                                     "is asked again by `Resume`")  # fmt: skip


def drop_bits(drop: bytes, count: int) -> Bools:
    """S1's first message's `drop` (one bit a pair), checked."""
    if len(drop) != (count + 7) // 8:
        raise errors.InvalidArgument(f"drop: {len(drop)} bytes for {count} pairs")
    bits = np.unpackbits(np.frombuffer(drop, np.uint8), bitorder="little")
    return bits[:count].astype(bool)


def rerun(role: _Role, s2: ShareExchange, inputs: Kept) -> pb.OutputShares:
    """S1: a batch cut during its rounds run again with S2 on the inputs both kept (the first
    message marked `replay`; S2 refuses one it did not keep), its output shares kept; the
    reply as `Evaluate`'s (the rounds' bytes each way)."""
    raw_m, raw_first, *dense = unpack(inputs.shares)  # (a batch by blocks: its H shares)
    m, first = pb.CircuitBatch.FromString(raw_m), pb.RoundMessage.FromString(raw_first)
    held, circuit, count = role.batch(m)
    rows_a, rows_b = to_rows(first.rows_a, "rows_a"), to_rows(first.rows_b, "rows_b")
    drop = drop_bits(first.drop, count)
    kept = from_kept(dense, count)
    party = batch_party(role, 0, held, circuit, m, rows_a, rows_b, kept, first.nonce)
    first.replay = True
    try:
        sent, received = s2.exchange(first, party)
    except triplecheck.DealRefused as exc:
        role.inputs.drop(m.batch, "refused: its deal failed the triples' check")
        raise triplecheck.refused(m.batch, exc) from None
    shares = _outputs(party, m.proposed, rows_a, rows_b, drop, first.mask)
    keep_batch(role, m, count, shares, party.circuit.rounds, sent, received)
    role.inputs.drop(m.batch, "its output shares are kept")
    return pb.OutputShares(shares=shares, round_bytes_sent=sent, round_bytes_received=received,
                           rounds=party.circuit.rounds)  # fmt: skip


def keep_batch(
    role: _Role, m: pb.CircuitBatch, pairs: int, shares: bytes, rounds: int = 0, sent: int = 0,
    received: int = 0,
) -> None:  # fmt: skip
    """Keep a batch of the proposal's output shares until C acknowledges it (a batch C names,
    extras or reach, is not kept: docs/protocol.md "A batch cut mid-way, resumed"; nor is a
    query's, core/tickets.py QUERY_MARK: a query is never resumed)."""
    if kept(m):
        role.batches.put(Kept(m.batch, (m.member_a, m.member_b), pairs, shares, rounds, sent,
                              received))  # fmt: skip


def resume(
    role: _Role, request: pb.ResumeRequest,
    again: Callable[[Kept], pb.OutputShares] | None = None,
) -> pb.OutputShares:  # fmt: skip
    """The kept shares of `request.batch`, the same bytes; with `again` (S1: `rerun`) and
    the batch's inputs kept but no shares (cut during its rounds), its rounds run again on
    them; refused (FAILED_PRECONDITION) naming why where the server holds neither."""
    try:
        kept = role.batches.get(request.batch)
    except Gone as exc:
        if again is not None and role.inputs.has(request.batch):
            inputs = role.inputs.get(request.batch)
            reply = again(inputs)
            role.log("combiner", "twoserver.resume", batch=request.batch, granted=True,
                     members=list(inputs.members), pairs=inputs.pairs,
                     rerun=True)  # fmt: skip
            return reply
        role.log("combiner", "twoserver.resume", batch=request.batch, granted=False,
                 reason=str(exc))  # fmt: skip
        raise errors.FailedPrecondition(
            f"{exc}; {NAMES[role.role]} holds no output shares of it to give again (a batch "
            "is kept until the combiner acknowledges it, for a bounded time)"
        ) from None
    role.log("combiner", "twoserver.resume", batch=request.batch, granted=True,
             members=list(kept.members), pairs=kept.pairs)  # fmt: skip
    return pb.OutputShares(shares=kept.shares)


def resume_pairs(request: pb.ProposeRequest, only: set[tuple[int, int]] | None
                 ) -> set[tuple[int, int]]:  # fmt: skip
    """The pairs of members whose parts leave out the pairs counted (`resume_pairs`),
    checked: each among the pairs S1 proposes parts for."""
    out: set[tuple[int, int]] = set()
    for n, p in enumerate(request.resume_pairs):
        ends = (p.member_a, p.member_b)
        if only is None or ends not in only or ends in out:
            raise errors.InvalidArgument(
                f"resume_pairs[{n}]: {p.member_a} and {p.member_b}; a pair of members of "
                "`pairs` (only_pairs set), each once"
            )
        out.add(ends)
    return out


def leave_out_counted(role: _Role, proposal: Proposal, resumed: set[tuple[int, int]]) -> int:
    """Drop from the parts of the `resumed` pairs of members the pairs S1's budget counted
    (evaluated in a run cut part-way, whose answers C holds); each part stays in its fresh
    order (an unblocked part stays one, core/crosspart.py `Cross.leaving_out`: its pairs left,
    in the order of the whole part's less the counted). Every pair stays proposed (an extra C
    names on one is answered 0, as before). How many were left out."""
    left = 0
    for k, p in enumerate(proposal.parts):
        if (p.member_a, p.member_b) not in resumed:
            continue
        names = proposal.members[p.member_a], proposal.members[p.member_b]
        if role.budget.sealed(*names):  # every pair counts: nothing would be proposed
            raise errors.FailedPrecondition(
                f"resume_pairs: {names[0]!r} and {names[1]!r} were restored from a backup, "
                "which counts every pair of them as evaluated: the pair of members cannot be "
                "resumed; one of the members uploads again"
            )
        if isinstance(p, Cross):  # an unblocked part: cut down slice by slice, a bit a pair
            proposal.parts[k] = cut = p.leaving_out(partial(role.budget.counted, *names))
            left += len(p) - len(cut)
            continue
        counted = role.budget.counted(*names, p.rows_a, p.rows_b)
        left += int(counted.sum())
        proposal.parts[k] = PairBatch(p.member_a, p.member_b, p.clk, p.rows_a[~counted],
                                      p.rows_b[~counted])  # fmt: skip
    return left


def acknowledge(
    role: _Role, request: pb.AcknowledgeRequest | pb.CircuitBatch
) -> pb.AcknowledgeReply:
    """Drop the batches C holds the answers of: `Acknowledge`'s, or those a batch carries
    (`CircuitBatch.acknowledged`: the next batch's message acknowledges the last ones); and
    `Acknowledge`'s `blocks`, the parts' blocks whose batches C has all run."""
    ids = request.batches if isinstance(request, pb.AcknowledgeRequest) else request.acknowledged
    role.inputs.acknowledge(ids)
    blocks = request.blocks if isinstance(request, pb.AcknowledgeRequest) else ()
    return pb.AcknowledgeReply(dropped=role.batches.acknowledge(ids),
                               blocks_dropped=sum(role.dense.drop(b) for b in blocks))  # fmt: skip


__all__ = [
    "acknowledge",
    "drop_bits",
    "keep_batch",
    "keep_inputs",
    "leave_out_counted",
    "rerun",
    "resume",
    "resume_pairs",
    "reused",
]
