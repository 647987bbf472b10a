"""S1's and S2's `Resume` and `Acknowledge` (rpc/twoserver_service.py, rpc/twoserver_shares.py
serve them; core/batchkeep.py keeps the batches): a batch of the proposal C lost the answer
of, asked again by its id alone, answered with the output shares the server gave the first
time, nothing evaluated or counted again; a batch C acknowledges is dropped. Every `Resume`,
granted or refused, is audited (`twoserver.resume`)."""

from __future__ import annotations

from blindmatch.matcher import errors
from blindmatch.matcher.core.batchkeep import Gone, Kept
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.rpc.twoserver_role import NAMES, _Role
from blindmatch.protos import blindmatch_pb2 as pb


def keep_batch(
    role: _Role, m: pb.CircuitBatch, pairs: int, shares: bytes, rounds: int = 0, sent: int = 0,
    received: int = 0,
) -> None:  # fmt: skip
    """Keep a batch of the proposal's output shares until C acknowledges it (a batch C names,
    extras or reach, is not kept: docs/protocol.md "A batch cut mid-way, resumed"; nor is a
    query's, core/tickets.py QUERY_MARK: a query is never resumed)."""
    if m.proposed and QUERY_MARK not in m.member_a + m.member_b:
        role.batches.put(Kept(m.batch, (m.member_a, m.member_b), pairs, shares, rounds, sent,
                              received))  # fmt: skip


def resume(role: _Role, request: pb.ResumeRequest) -> pb.OutputShares:
    """The kept shares of `request.batch`, the same bytes; refused (FAILED_PRECONDITION)
    naming why where the server holds none."""
    try:
        kept = role.batches.get(request.batch)
    except Gone as exc:
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
    order. Every pair stays proposed (an extra C names on one is answered 0, as before).
    How many were left out."""
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
        counted = role.budget.counted(*names, p.rows_a, p.rows_b)
        left += int(counted.sum())
        proposal.parts[k] = PairBatch(p.member_a, p.member_b, p.clk, p.rows_a[~counted],
                                      p.rows_b[~counted])  # fmt: skip
    return left


def acknowledge(role: _Role, request: pb.AcknowledgeRequest) -> pb.AcknowledgeReply:
    return pb.AcknowledgeReply(dropped=role.batches.acknowledge(request.batches))


__all__ = ["acknowledge", "keep_batch", "leave_out_counted", "resume", "resume_pairs"]
