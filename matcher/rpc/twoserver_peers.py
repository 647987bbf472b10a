"""A two-server party's calls to another, and S1's to S2 (rpc/twoserver_service.py and
rpc/twoserver_shares.py serve them).

What every party's call to another shares: its deadline (`CALL_SECONDS`), a party's failed
call as this party's error (`peer_error`: a party that cannot be reached is UNAVAILABLE
naming it, never a run with fewer links; a refusal keeps its status, its message prefixed
with the party), the wait for a connection before a batch goes (`connected`), and the rows
and rule as the messages carry them. Then S1's side of its calls to S2: the matched keys
streamed to S2's `Expand` and its pairs read back, and `ShareExchange`, the rounds of a
batch on one bidirectional `Exchange` stream to S2, a message each way a round. The
combiner's calls to S1 and S2 are rpc/twoserver_client.py's `RemoteServers`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, marginrounds
from blindmatch.matcher.core.twoserver import Matched, PairBatch, Rows
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.older_peer import is_older, older_peer_error
from blindmatch.matcher.rpc.status import answered, never_sent, retryable
from blindmatch.matcher.rpc.twoserver_channel import (
    KeptChannels,
    Stopping,
    channel,
    closed_channel,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

CALL_SECONDS = 600.0  # a batch's call (a party computing its side), or Propose's stream
T = TypeVar("T")


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
    UNAVAILABLE or DEADLINE_EXCEEDED is the party unreachable (`Unavailable` naming it, its
    `sent` False where no connection carried the call: rpc/status.py `never_sent`); a
    status the party answered keeps its kind, its message prefixed with the party (a
    RESOURCE_EXHAUSTED marked retryable stays so: `Busy`); UNIMPLEMENTED, a call the party
    does not know, is its older blindmatch (rpc/older_peer.py)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    if is_older(exc):  # a call the party does not know: it runs an older blindmatch
        return older_peer_error(who)
    details = (exc.details() if hasattr(exc, "details") else "") or code.name
    if code in UNREACHED and not answered(exc):
        error = errors.Unavailable(f"{who} is unreachable ({code.name}: {details})")
        error.sent = not never_sent(exc)
        return error
    cls = _BY_STATUS.get(code.name, errors.ServiceError)
    if cls is errors.ResourceExhausted and retryable(exc):
        cls = errors.Busy  # a momentary limit at the party (S1's proposals in flight)
    return cls(f"{who}: {details}")


UNREACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
CONNECT_SECONDS = 5.0  # how long a batch waits for a connection to S1 before it fails
STOP_LOOK = 0.05  # how often a wait on a kept channel looks whether the matcher stops


def connected(
    channel: grpc.Channel,
    who: str,
    seconds: float | None = None,
    kept: tuple[KeptChannels, int] | None = None,
) -> None:
    """Return once `channel` to party `who` is connected (asking it to connect); else (none
    made in `seconds`, CONNECT_SECONDS unless given) raise `Unavailable` naming it, with
    `evaluated` False: nothing was sent to the party. `kept`: `channel` is the matcher's
    kept one (rpc/twoserver_channel.py `KeptChannels`, and which: 0 S1, 1 S2), subscribed
    to through it: none once its close began (the matcher stops; a batch still running then
    would start gRPC's poll of a channel being closed, which fails on gRPC's thread), and a
    wait given up as it begins (the close waits for the unsubscribe): `Stopping`, an
    `Unavailable` with `evaluated` False.

    Read with gRPC's public `Channel.subscribe`, in two looks: first the state as it is
    (`try_to_connect` False), which on a connected channel is READY at once; only a channel
    not connected is then asked to connect (a second subscription, `try_to_connect` True),
    and this returns once it is READY. A connected channel is never asked to connect: gRPC's
    connectivity poll, which outlives a subscription by up to its 0.2 s poll period, would
    then ask a channel closed just after this returned (as `channel_ready_future`, asking
    every time, did), and fail on its thread."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    if seconds is None:
        seconds = CONNECT_SECONDS  # (read here: a test may set a shorter wait)
    deadline = time.monotonic() + seconds
    for first in (True, False):  # as it is; then, not connected, asked to connect
        closing = _subscribe(channel, who, kept, states.put, try_to_connect=not first)
        try:
            ready = _ready(states, deadline, first=first, closing=closing)
        finally:
            channel.unsubscribe(states.put)
        if closing is not None and closing.is_set():
            raise _stopped(who)
        if ready:
            return
    error = errors.Unavailable(
        f"{who} is unreachable (UNAVAILABLE: no connection in {seconds:g} s)"
    )
    error.evaluated = False
    raise error


def _subscribe(
    channel: grpc.Channel,
    who: str,
    kept: tuple[KeptChannels, int] | None,
    callback: Callable[[grpc.ChannelConnectivity], None],
    try_to_connect: bool,
) -> threading.Event | None:
    """`callback` subscribed to `channel`'s state (`connected`): through `kept` where given,
    returning the event its close sets; `Stopping` where the close began, or where the pair
    was closed and opened again since `channel` was taken (nothing subscribed)."""
    if kept is None:
        channel.subscribe(callback, try_to_connect=try_to_connect)
        return None
    got = kept[0].subscribe(kept[1], callback, try_to_connect)
    if got is None:
        raise _stopped(who)
    if got[0] is not channel:  # (a new pair: `channel` was closed with the old one)
        got[0].unsubscribe(callback)
        raise _stopped(who)
    return got[1]


def _stopped(who: str) -> Stopping:
    error = Stopping(f"{who} was not sent the batch: the matcher is stopping")
    error.evaluated = False
    return error


def _ready(
    states: queue.SimpleQueue[grpc.ChannelConnectivity],
    deadline: float,
    first: bool,
    closing: threading.Event | None = None,
) -> bool:
    """Whether a state delivered before `deadline` is READY (`first`: the first only);
    False as soon as `closing` is set (looked at every STOP_LOOK seconds)."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            state = states.get(timeout=left if closing is None else min(left, STOP_LOOK))
        except queue.Empty:
            if closing is None or closing.is_set():
                return False
            continue
        if state is grpc.ChannelConnectivity.READY:
            return True
        if first:
            return False
    return False


def call_party(who: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, a call to party `who`; its failure as this party's error
    (`peer_error`). A call on a closed channel (the matcher's kept ones, closed by its stop:
    rpc/twoserver_channel.py `KeptChannels`), which gRPC refuses with a ValueError, is
    `Stopping` (an `Unavailable`) with `sent` False: the party never saw it (before, the
    ValueError went up as an internal error)."""
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as exc:
        raise peer_error(who, exc) from None
    except ValueError as exc:
        if not closed_channel(exc):
            raise
        error = Stopping(f"{who} was not sent the call: the matcher is stopping ({exc})")
        error.sent = False
        raise error from None


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
