"""The combiner's calls to S1 and S2 in a two-server run (rpc/twoserver_service.py and
rpc/twoserver_shares.py serve them).

`RemoteServers` is core/tworun.py's `Servers` over gRPC, what the combiner drives its run
through: S1's `Propose` for the size of each part of its proposal, and for each batch of the
link-bit circuit (a part's pairs by reference, or pairs C names) S2's `Prepare` (S2's
setup), S1's `Evaluate` (S1's setup; S1 then runs the rounds with S2: rpc/twoserver_peers.py
`ShareExchange`) and S2's `Collect`, each carrying only the bytes `Combiner.deal` made.

A party that cannot be reached fails the run with UNAVAILABLE naming it (never a run with
fewer links); a refusal from a party keeps its status, its message prefixed with the party
(rpc/twoserver_peers.py `peer_error`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import batchresume, densearith, densemargin, linkbit
from blindmatch.matcher.core.batchresume import BatchWatch
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.core.twoserver import PairBatch, Proposed, Shares
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.rpc.twoserver_channel import KeptChannels, channel, close_unwatched
from blindmatch.matcher.rpc.twoserver_peers import (
    CALL_SECONDS,
    call_party,
    connected,
    from_rows,
    peer_error,
    wire_rule,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher.twoserver")


class RemoteServers:
    """S1 and S2 reached over gRPC, as the combiner sees them (core/tworun.py `Servers`)."""

    def __init__(
        self,
        s1: str,
        s2: str,
        key: str,
        members: Sequence[str],
        records: Sequence[int],
        bits: Sequence[int],
        credentials: grpc.ChannelCredentials | None = None,
        kept: KeptChannels | None = None,
        channels: tuple[grpc.Channel, grpc.Channel] | None = None,
    ) -> None:
        """`kept`: the matcher's channels to S1 and S2, kept across runs and queries (`close`
        leaves them open; a batch's wait for S1's connection subscribes through it, none once
        the matcher stops: rpc/twoserver_peers.py `connected`); `channels`: a caller's own
        (benchmarks/twoserver_query_path.py counts the calls on them), left open; neither:
        its own, closed by `close` once gRPC polls their state no more
        (rpc/twoserver_channel.py `close_unwatched`: a batch's `connected` may have asked
        one to connect)."""
        self.names = (f"S1 ({s1})", f"S2 ({s2})")
        self._kept = kept
        self._own = kept is None and channels is None
        self._channels = (
            kept.pair() if kept is not None
            else channels or (channel(s1, credentials), channel(s2, credentials))
        )  # fmt: skip
        self._s1 = pb_grpc.TwoServerBlockingStub(self._channels[0])
        self._s2 = pb_grpc.TwoServerSharesStub(self._channels[1])
        self._metadata = (("authorization", f"Bearer {key}"),)
        self.members, self.records, self._bits = list(members), list(records), list(bits)
        self._parts: list[Proposed] = []  # what S1's Propose said of its proposal
        self.watch: BatchWatch | None = None  # journals each batch (core/batchresume.py)
        self.resume_pairs: list[tuple[int, int]] = []  # Propose's `resume_pairs`
        self._unacked: list[str] = []  # answered, to acknowledge with the next batch
        self._query = any(QUERY_MARK in m for m in self.members)  # a query's: nothing kept
        # Unblocked parts by blocks (False: by pairs; `margin`: the rule's by its margin)
        self.dense, self.margin, self._blocks = True, True, dict[int, str]()  # S1's, S2's by id
        self._batch_pairs: dict[int, int] = {}  # a part's batches on its blocks (`batch_pairs`)
        # C's standing partners (rpc/twoserver_standdeal.py), kept across queries by the
        # matcher's set-up (rpc/twoserver_project.py); None: no part by the standing path
        self.conversions: Any = None
        self._users, self.closed, self._users_lock = 0, False, threading.Lock()  # `keep`

    def watch_batches(self, watch: BatchWatch, resume_pairs: Sequence[tuple[int, int]]) -> None:
        """Journal each batch of the proposal with `watch`; S1 leaves out `resume_pairs`'."""
        self.watch, self.resume_pairs = watch, list(resume_pairs)

    def close(self) -> None:
        self.acknowledge(self._unacked) if self._unacked else None  # the last batches'
        with self._users_lock:
            self.closed, users = True, self._users
        if not users:
            self._close_channels()
        if self.conversions is not None:  # a background conversion may go on
            self.conversions.answered()

    def keep(self) -> None:
        """Hold the channels open past `close` (a background standing conversion's calls,
        rpc/twoserver_standdeal.py) until `let_go`."""
        with self._users_lock:
            self._users += 1

    def let_go(self) -> None:
        with self._users_lock:
            self._users -= 1
            last = self.closed and not self._users
        if last:
            self._close_channels()

    def _close_channels(self) -> None:
        for c in self._channels if self._own else ():
            close_unwatched(c)

    def stopped(self) -> bool:
        """Whether its channels are the matcher's, closed as it stopped (or closing): its
        calls fail ValueError "Cannot invoke RPC on closed channel!"."""
        return self._kept is not None and self._kept.closed(self._channels[0])

    def bits(self, clk: int) -> int:
        return self._bits[clk]

    def block(
        self, lacking: list[npt.NDArray[np.bool_]] | None, cutoffs: tuple[float, ...] = ()
    ) -> list[PairBatch]:
        raise errors.FailedPrecondition(
            "the candidates' rows stay on S1 and S2 (the Dice oracle runs in one process only)"
        )

    def propose(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...],
        rule: Rule = NO_RULE,
        only: Sequence[tuple[int, int]] | None = None,
    ) -> list[Proposed]:
        self._rule, self._cutoffs = rule, cutoffs
        request = pb.ProposeRequest(members=self.members, records=self.records,
                                    fallback=len(self._bits) == 2,
                                    threshold=cutoffs[0] if cutoffs else 0.0,
                                    buckets=cutoffs[1:], rule=wire_rule(rule),
                                    only_pairs=only is not None,
                                    pairs=[pb.MemberPair(member_a=a, member_b=b)
                                           for a, b in only or ()],
                                    resume_pairs=[pb.MemberPair(member_a=a, member_b=b)
                                                  for a, b in self.resume_pairs])  # fmt: skip
        try:
            parts = list(self._s1.Propose(request, metadata=self._metadata, timeout=CALL_SECONDS))
        except grpc.RpcError as exc:
            raise peer_error(self.names[0], exc) from None
        self._parts = [Proposed(p.member_a, p.member_b, p.clk, p.pairs,
                                tuple(zip(p.block_rows_a, p.block_rows_b, strict=True))
                                if self.dense else ()) for p in parts]  # fmt: skip
        self._blocks, self._batch_pairs = {}, {}
        for p in self._parts:
            if not (p.member_a < p.member_b < len(self.members)) or p.clk >= len(self._bits):
                raise errors.DataLoss(f"{self.names[0]} proposed a part of no such members/CLK")
        return list(self._parts)

    _rule: Rule = NO_RULE  # the run's, from `propose`
    _cutoffs: tuple[float, ...] = ()  # the run's, from `propose` (a reach batch names them)

    def _batch(
        self, batch: str, member_a: int, member_b: int, clk: int, setup: bytes,
        cutoffs: tuple[float, ...], **pairs: Any,
    ) -> pb.CircuitBatch:  # fmt: skip
        return pb.CircuitBatch(
            batch=batch, member_a=self.members[member_a], member_b=self.members[member_b],
            records_a=self.records[member_a], records_b=self.records[member_b], clk=clk,
            cutoffs=cutoffs, setup=setup, rule=wire_rule(self._rule), **pairs,
        )  # fmt: skip

    def _run(
        self,
        to_s1: pb.CircuitBatch,
        to_s2: pb.CircuitBatch,
        pairs: int,
        circuit: linkbit.Circuit,
        transcript: linkbit.Transcript,
        tagged: bool,
        ends: tuple[int, int] | None = None,
    ) -> tuple[bytes, bytes]:
        """`ends`: a batch of the proposal, told to `watch` (journaled, then acknowledged)."""
        watch = self.watch if ends is not None else None
        acked = list(self._unacked)  # the answers journaled since the last batch
        for m in (to_s1, to_s2):
            m.acknowledged.extend(acked)
        if watch is not None and ends is not None:
            watch.out(to_s1.batch, *ends, to_s1.clk, pairs)
        try:
            call_party(self.names[1], self._s2.Prepare, to_s2, metadata=self._metadata,
                       timeout=CALL_SECONDS)  # fmt: skip
            # S1 connected before its batch goes, so that a failure after it may have been
            # evaluated (S1 counts its pairs first) and one before it was not (`connected`).
            connected(self._channels[0], self.names[0],
                      kept=None if self._kept is None else (self._kept, 0))  # fmt: skip
        except errors.ServiceError as exc:
            exc.evaluated = False  # S1 was not asked: none of the batch's pairs is spent
            if watch is not None and ends is not None:
                watch.unsent(to_s1.batch, *ends)
            raise
        o1 = None
        try:
            o1 = call_party(self.names[0], self._s1.Evaluate, to_s1, metadata=self._metadata,
                            timeout=CALL_SECONDS)  # fmt: skip
            del self._unacked[: len(acked)]  # both hold them no more (else sent at `close`)
            o2 = call_party(self.names[1], self._s2.Collect,
                            pb.CollectRequest(batch=to_s1.batch), metadata=self._metadata,
                            timeout=CALL_SECONDS)  # fmt: skip
        except errors.ServiceError as exc:
            if o1 is None and not exc.sent:  # S1 went down after `connected`: never had it
                exc.evaluated = False
                if watch is not None and ends is not None:
                    watch.unsent(to_s1.batch, *ends)
            elif watch is not None and ends is not None and not isinstance(exc, errors.Unavailable):
                watch.refused(to_s1.batch, *ends)  # answered with a refusal: no shares kept
            raise
        transcript.count("C", "S1", to_s1.ByteSize())
        transcript.count("C", "S2", to_s2.ByteSize())
        transcript.count("S1", "S2", o1.round_bytes_sent)
        transcript.count("S2", "S1", o1.round_bytes_received)
        transcript.count("S1", "C", o1.ByteSize())
        transcript.count("S2", "C", o2.ByteSize())
        transcript.rounds += o1.rounds
        rows = circuit.n_outputs + (linkbit.TAG_BITS if tagged else 0)
        words = linkbit.words_for(pairs) * 8 * rows
        if len(o1.shares) != words or len(o2.shares) != words:
            raise errors.DataLoss(f"output shares of {len(o1.shares)} and {len(o2.shares)} "
                                  f"bytes for {pairs} pairs")  # fmt: skip
        if ends is not None and (watch is not None or not self._query):
            if watch is not None:
                got = batchresume.found(circuit, o1.shares, o2.shares, pairs, *ends)
                watch.answered(to_s1.batch, *ends, got)
            self._unacked.append(to_s1.batch)  # with the next batch, or at `close`
        return o1.shares, o2.shares

    def resume(self, batch: str) -> tuple[bytes, bytes, dict[str, int]]:
        """S1's and S2's output shares of a batch of the proposal again, by its id alone
        (core/batchkeep.py), and the calls' bytes by direction (a batch run again: its rounds'
        too); refused by either naming why where it holds none."""
        request = pb.ResumeRequest(batch=batch)
        o1, o2 = (
            call_party(who, rpc, request, metadata=self._metadata, timeout=CALL_SECONDS)
            for who, rpc in zip(self.names, (self._s1.Resume, self._s2.Resume), strict=True)
        )
        n, ways = request.ByteSize(), ("C->S1", "C->S2", "S1->C", "S2->C", "S1->S2", "S2->S1")
        counts = (n, n, o1.ByteSize(), o2.ByteSize(), o1.round_bytes_sent, o1.round_bytes_received)
        return o1.shares, o2.shares, dict(zip(ways, counts, strict=True))

    def acknowledge(self, batches: Sequence[str]) -> None:
        """Tell S1 and S2 the combiner holds these batches' answers (they drop their
        copies); a party not reached keeps them until they expire (core/batchkeep.py)."""
        request = pb.AcknowledgeRequest(batches=list(batches))
        for who, stub in ((self.names[0], self._s1), (self.names[1], self._s2)):
            try:
                call_party(who, stub.Acknowledge, request, metadata=self._metadata,
                           timeout=30.0)  # fmt: skip
            except errors.ServiceError as exc:
                log.info("%s kept batches %s unacknowledged: %s", who, list(batches), exc)

    def prepare_part(self, index: int, deals: Sequence[densearith.BlockDeal],
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     pops: Sequence[Any] = ()) -> None:  # fmt: skip
        """Part `index`'s blocks dealt, converted and checked (rpc/twoserver_blocks.py)."""
        from blindmatch.matcher.rpc.twoserver_blocks import prepare_blocks

        self._blocks[index], self._batch_pairs[index] = prepare_blocks(
            self, index, deals, transcript, pops, clock
        )

    def prepare_standing(self, index: int, plan: Any, transcript: linkbit.Transcript,
                         clock: dict[str, float]) -> bool:  # fmt: skip
        """Part `index` against its partner converted once (rpc/twoserver_standdeal.py), its
        batches then on the query's H shares as on blocks; False where C keeps no
        conversions or admits none of this partner (the part goes by pairs)."""
        from blindmatch.matcher.rpc.twoserver_standdeal import prepare_standing

        if self.conversions is None:
            return False
        got = prepare_standing(self, self.conversions, index, plan, transcript, clock)
        if got is None:
            return False
        self._blocks[index], self._batch_pairs[index] = got
        return True

    def part_done(self, index: int) -> None:
        """Part `index`'s batches all answered: S1 and S2 drop its blocks now
        (rpc/twoserver_blocks.py `release_blocks`)."""
        from blindmatch.matcher.rpc.twoserver_blocks import release_blocks

        release_blocks(self, index)

    def batch_pairs(self, index: int) -> int:
        """The most pairs a batch of part `index` may have (larger on its blocks where S1
        and S2 both take it: rpc/twoserver_blocks.py `largest_batch`)."""
        return self._batch_pairs.get(index, linkbit.BATCH)

    def evaluate_part(
        self,
        index: int,
        offset: int,
        count: int,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        p = self._parts[index]
        batch = secrets.token_hex(12)
        ref: dict[str, Any] = dict(proposed=True, part=index, offset=offset, count=count)
        if index in self._blocks:  # on the H shares of its blocks (by the margin: its deal's)
            ref.update(blocks=self._blocks[index], margin=isinstance(dealt, densemargin.Deal))
        made = [self._batch(batch, p.member_a, p.member_b, p.clk, setup, circuit.cutoffs, **ref)
                for setup in (dealt.to_s1, dealt.to_s2)]  # fmt: skip
        return self._run(made[0], made[1], count, circuit, transcript, tagged=True,
                         ends=(p.member_a, p.member_b))  # fmt: skip

    def evaluate(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self._named(part, circuit, dealt, transcript, circuit.cutoffs)

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self._named(part, circuit, dealt, transcript, self._cutoffs, reach=True)

    def _named(
        self, part: PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
        transcript: linkbit.Transcript, cutoffs: tuple[float, ...], **reach: bool,
    ) -> tuple[bytes, bytes]:  # fmt: skip
        """A batch of pairs C names, at `cutoffs` (`evaluate`; `evaluate_reach`: the run's,
        the circuit at its reach cut-off)."""
        batch = secrets.token_hex(12)
        rows = dict(rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b), **reach)
        made = [self._batch(batch, part.member_a, part.member_b, part.clk, setup, cutoffs, **rows)
                for setup in (dealt.to_s1, dealt.to_s2)]  # fmt: skip
        return self._run(made[0], made[1], len(part), circuit, transcript, tagged=False)

    def messages(self, batch: PairBatch) -> tuple[Shares, Shares]:
        raise errors.FailedPrecondition(
            "the Dice oracle runs in one process only (it leaks: docs/privacy-design.md)"
        )
