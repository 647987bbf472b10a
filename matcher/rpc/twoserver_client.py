"""The two-server run's calls between the parties (rpc/twoserver_service.py serves them).

`RemoteServers` is core/tworun.py's `Servers` over gRPC, what the combiner drives its run
through: S1's `Propose` for the size of each part of its proposal, and for each batch of the
link-bit circuit (a part's pairs by reference, or pairs C names) S2's `Prepare` (S2's
setup), S1's `Evaluate` (S1's setup; S1 then runs the rounds with S2) and S2's `Collect`,
each carrying only the bytes `Combiner.deal` made. `ShareExchange` is S1's side of the
rounds: one bidirectional `Exchange` stream to S2 a batch, a message each way a round.

A party that cannot be reached fails the run with UNAVAILABLE naming it (never a run with
fewer links); a refusal from a party keeps its status, its message prefixed with the party.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import batchresume, densearith, densemargin, linkbit, marginrounds
from blindmatch.matcher.core.batchresume import BatchWatch
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.core.twoserver import Matched, PairBatch, Proposed, Rows, Shares
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.rpc.status import answered, retryable
from blindmatch.matcher.rpc.twoserver_channel import channel
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

CALL_SECONDS = 600.0  # a batch's call (a party computing its side), or Propose's stream
T = TypeVar("T")
log = logging.getLogger("blindmatch.matcher.twoserver")


def wire_rule(rule: Rule) -> pb.ScoreRule | None:
    """A run's rule as ProposeRequest and CircuitBatch carry it (unset: none)."""
    return pb.ScoreRule(gap=rule.gap, offset=rule.offset, reach=rule.reach) if rule.active else None


def to_rows(data: bytes, field: str) -> Rows:
    if len(data) % 4:
        raise errors.InvalidArgument(f"{field}: {len(data)} bytes is not whole uint32 rows")
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def from_rows(rows: Rows) -> bytes:
    return np.ascontiguousarray(rows, dtype="<u4").tobytes()


_BY_STATUS = {cls.status_name: cls for cls in (
    errors.InvalidArgument, errors.Unauthenticated, errors.PermissionDenied, errors.NotFound,
    errors.FailedPrecondition, errors.ResourceExhausted, errors.Unavailable, errors.DataLoss,
)}  # fmt: skip


def peer_error(who: str, exc: grpc.RpcError) -> errors.ServiceError:
    """A failed call to party `who` as this party's error. A status gRPC made up for want of
    an answer (rpc/status.py `answered`: the party never ended the call itself) of
    UNAVAILABLE or DEADLINE_EXCEEDED is the party unreachable (`Unavailable` naming it); a
    status the party answered keeps its kind, its message prefixed with the party (a
    RESOURCE_EXHAUSTED marked retryable stays so: `Busy`)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or code.name
    if code in UNREACHED and not answered(exc):
        return errors.Unavailable(f"{who} is unreachable ({code.name}: {details})")
    cls = _BY_STATUS.get(code.name, errors.ServiceError)
    if cls is errors.ResourceExhausted and retryable(exc):
        cls = errors.Busy  # a momentary limit at the party (S1's proposals in flight)
    return cls(f"{who}: {details}")


UNREACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
CONNECT_SECONDS = 5.0  # how long a batch waits for a connection to S1 before it fails


def connected(channel: grpc.Channel, who: str, seconds: float = CONNECT_SECONDS) -> None:
    """Return once `channel` to party `who` is connected (asking it to connect); else (none
    made in `seconds`) raise `Unavailable` naming it, with `evaluated` False: nothing was
    sent to the party.

    Read with gRPC's public `Channel.subscribe`, in two looks: first the state as it is
    (`try_to_connect` False), which on a connected channel is READY at once; only a channel
    not connected is then asked to connect (a second subscription, `try_to_connect` True),
    and this returns once it is READY. A connected channel is never asked to connect: gRPC's
    connectivity poll, which outlives a subscription by up to its 0.2 s poll period, would
    then ask a channel closed just after this returned (as `channel_ready_future`, asking
    every time, did), and fail on its thread."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    deadline = time.monotonic() + seconds
    channel.subscribe(states.put, try_to_connect=False)
    try:
        if _ready(states, deadline, first=True):
            return
    finally:
        channel.unsubscribe(states.put)
    channel.subscribe(states.put, try_to_connect=True)
    try:
        if _ready(states, deadline, first=False):
            return
    finally:
        channel.unsubscribe(states.put)
    error = errors.Unavailable(
        f"{who} is unreachable (UNAVAILABLE: no connection in {seconds:g} s)"
    )
    error.evaluated = False
    raise error


def _ready(
    states: queue.SimpleQueue[grpc.ChannelConnectivity], deadline: float, first: bool
) -> bool:
    """Whether a state delivered before `deadline` is READY (`first`: the first only)."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            state = states.get(timeout=left)
        except queue.Empty:
            return False
        if state is grpc.ChannelConnectivity.READY:
            return True
        if first:
            return False
    return False


def _call(who: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as exc:
        raise peer_error(who, exc) from None


MATCHES_PART = 1 << 17  # pairs of tokens a SealedMatches message (4 MiB)


def matches_parts(run: pb.ProposeRequest, matched: Iterable[Matched]) -> Iterator[pb.SealedMatches]:
    """What S1 streams to S2's Expand: the run first, then each of `matched` in parts."""
    yield pb.SealedMatches(run=run)
    for m in matched:
        for lo in range(0, len(m), MATCHES_PART):
            a, b = (t[lo : lo + MATCHES_PART].tobytes() for t in (m.tokens_a, m.tokens_b))
            yield pb.SealedMatches(member_a=m.member_a, member_b=m.member_b, clk=m.clk,
                                   tokens_a=a, tokens_b=b)  # fmt: skip
        del m  # S1's join makes the next when it is taken: S1 holds one at a time


EXPANDED_PART = 1 << 20  # pairs an ExpandedPairs message (8 MiB)


def expanded_parts(batches: list[PairBatch]) -> Iterator[pb.ExpandedPairs]:
    """S2's expansion as ExpandedPairs, EXPANDED_PART pairs a part (`last` a batch's last)."""
    for pairs in batches:
        chunks = list(pairs.split(EXPANDED_PART)) or [pairs]
        for k, part in enumerate(chunks):
            yield pb.ExpandedPairs(
                member_a=part.member_a, member_b=part.member_b, clk=part.clk,
                rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b),
                last=k == len(chunks) - 1,
            )  # fmt: skip


def read_expanded(parts: Iterator[pb.ExpandedPairs], peer: str) -> list[PairBatch]:
    """ExpandedPairs back into pairs (S2's, for S1), checked."""
    out: list[PairBatch] = []
    rows_a: list[Rows] = []
    rows_b: list[Rows] = []
    for part in parts:
        try:
            a, b = to_rows(part.rows_a, "rows_a"), to_rows(part.rows_b, "rows_b")
        except errors.ServiceError as exc:
            raise errors.DataLoss(f"{peer}: {exc}") from None
        if len(a) != len(b):
            raise errors.DataLoss(f"{peer}: rows_a/rows_b of {len(a)} and {len(b)} rows")
        rows_a.append(a)
        rows_b.append(b)
        if part.last:
            out.append(PairBatch(part.member_a, part.member_b, part.clk,
                                 np.concatenate(rows_a), np.concatenate(rows_b)))  # fmt: skip
            rows_a, rows_b = [], []
    return out


class ShareExchange:
    """S1's calls to S2: the expansion of the matched keys, the rounds of a batch."""

    def __init__(
        self, address: str, key: str, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.name = f"S2 ({address})"
        self._stub = pb_grpc.TwoServerSharesStub(channel(address, credentials))
        self._metadata = (("authorization", f"Bearer {key}"),)

    def expand(
        self, run: pb.ProposeRequest, matched: Iterable[Matched]
    ) -> Iterator[pb.ExpandedPairs]:
        """S2's pairs sharing a key, from the keys S1 matched (S2 opens the tokens)."""
        try:
            yield from self._stub.Expand(matches_parts(run, matched), metadata=self._metadata,
                                         timeout=CALL_SECONDS)  # fmt: skip
        except grpc.RpcError as exc:
            raise peer_error(self.name, exc) from None

    def exchange(self, first: pb.RoundMessage,
                 party: linkbit.Party | marginrounds.Rounds) -> tuple[int, int]:  # fmt: skip
        """Run `party` (S1's) through every round with S2's party of the batch `first` opens
        (its id, digest, rows, the output pad's seed, the pairs answered 0 and S1's nonce;
        S2 answers with its nonce, `linkbit.Party.agree`, and the two check C's triples with
        round 0: `triplecheck.DealRefused` where they fail); bytes sent and received."""
        rounds = party.circuit.rounds
        outbox: queue.Queue[pb.RoundMessage | None] = queue.Queue()
        sent = received = 0
        digest = b""
        done = -1  # S2's first reply: its nonce
        first.nonce = party.nonce()
        sent += len(first.nonce) + len(first.rows_a) + len(first.rows_b) + len(first.mask)
        outbox.put(first)

        def requests() -> Iterator[pb.RoundMessage]:
            while (m := outbox.get()) is not None:
                yield m

        try:
            replies = self._stub.Exchange(requests(), metadata=self._metadata,
                                          timeout=CALL_SECONDS)  # fmt: skip
            for reply in replies:
                received += len(reply.masked) + len(reply.nonce) + len(reply.check)
                received += len(reply.digest)
                try:
                    if done < 0:  # S2's nonce and half of the triples' check
                        party.agree(reply.nonce)
                        digest = party.verify(reply.check)
                    else:
                        if not done:  # S2's digest: S1's verdict (DealRefused) before round 0
                            party.confirm(reply.digest)
                        party.close(reply.masked)
                except ValueError as exc:
                    raise errors.DataLoss(f"{self.name}: {exc}") from None
                done += 1
                if done < rounds:
                    mine = party.open()
                    m = pb.RoundMessage(masked=mine)
                    if not done:
                        m.check, m.digest = party.check(), digest
                    sent += len(mine) + len(m.check) + len(m.digest)
                    outbox.put(m)
                else:
                    outbox.put(None)
        except grpc.RpcError as exc:
            raise peer_error(self.name, exc) from None
        finally:
            outbox.put(None)
        if done != rounds:
            raise errors.DataLoss(
                f"{self.name} ended the exchange after {max(done, 0)} of {rounds} rounds"
            )
        return sent, received


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
        channels: tuple[grpc.Channel, grpc.Channel] | None = None,
    ) -> None:
        """`channels`: to S1 and S2, kept by the caller across runs and queries (`close`
        leaves them open); None: its own, closed by `close`."""
        self.names = (f"S1 ({s1})", f"S2 ({s2})")
        self._own = channels is None
        self._channels = channels or (channel(s1, credentials), channel(s2, credentials))
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

    def watch_batches(self, watch: BatchWatch, resume_pairs: Sequence[tuple[int, int]]) -> None:
        """Journal each batch of the proposal with `watch`; S1 leaves out `resume_pairs`'."""
        self.watch, self.resume_pairs = watch, list(resume_pairs)

    def close(self) -> None:
        self.acknowledge(self._unacked) if self._unacked else None  # the last batches'
        for c in self._channels if self._own else ():
            c.close()

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
        self._blocks = {}
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
            _call(self.names[1], self._s2.Prepare, to_s2, metadata=self._metadata,
                  timeout=CALL_SECONDS)  # fmt: skip
            # S1 connected before its batch goes, so that a failure after it may have been
            # evaluated (S1 counts its pairs first) and one before it was not (`connected`).
            connected(self._channels[0], self.names[0])
        except errors.ServiceError as exc:
            exc.evaluated = False  # S1 was not asked: none of the batch's pairs is spent
            if watch is not None and ends is not None:
                watch.unsent(to_s1.batch, *ends)
            raise
        try:
            o1 = _call(self.names[0], self._s1.Evaluate, to_s1, metadata=self._metadata,
                       timeout=CALL_SECONDS)  # fmt: skip
            del self._unacked[: len(acked)]  # both hold them no more (else sent at `close`)
            o2 = _call(self.names[1], self._s2.Collect, pb.CollectRequest(batch=to_s1.batch),
                       metadata=self._metadata, timeout=CALL_SECONDS)  # fmt: skip
        except errors.ServiceError as exc:
            if watch is not None and ends is not None and not isinstance(exc, errors.Unavailable):
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
            _call(who, rpc, request, metadata=self._metadata, timeout=CALL_SECONDS)
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
                _call(who, stub.Acknowledge, request, metadata=self._metadata, timeout=30.0)
            except errors.ServiceError as exc:
                log.info("%s kept batches %s unacknowledged: %s", who, list(batches), exc)

    def prepare_part(self, index: int, deals: Sequence[densearith.BlockDeal],
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     pops: Sequence[Any] = ()) -> None:  # fmt: skip
        """Part `index`'s blocks dealt, converted and checked (rpc/twoserver_blocks.py)."""
        from blindmatch.matcher.rpc.twoserver_blocks import prepare_blocks

        self._blocks[index] = prepare_blocks(self, index, deals, transcript, pops, clock)

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
        batch = secrets.token_hex(12)
        rows = dict(rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b))
        made = [self._batch(batch, part.member_a, part.member_b, part.clk, setup,
                            circuit.cutoffs, **rows)
                for setup in (dealt.to_s1, dealt.to_s2)]  # fmt: skip
        return self._run(made[0], made[1], len(part), circuit, transcript, tagged=False)

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        batch = secrets.token_hex(12)
        rows = dict(rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b), reach=True)
        made = [self._batch(batch, part.member_a, part.member_b, part.clk, setup,
                            self._cutoffs, **rows)
                for setup in (dealt.to_s1, dealt.to_s2)]  # fmt: skip
        return self._run(made[0], made[1], len(part), circuit, transcript, tagged=False)

    def messages(self, batch: PairBatch) -> tuple[Shares, Shares]:
        raise errors.FailedPrecondition(
            "the Dice oracle runs in one process only (it leaks: docs/privacy-design.md)"
        )
