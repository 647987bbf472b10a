"""The matcher's side of its look-up servers: fan a query out, merge, forward changes.

`LookupServers` is `realtime.shards.RemoteLookups` over gRPC. The i-th address given to
`serve --lookup-server` holds shard i of as many as there are addresses (each server says
which it holds in every reply, and a mismatch is refused). A query goes to every server
at once (one unary call each, in flight together) and waits for all: its latency is the
slowest server's look-up plus one round trip. The hits are merged per query and partner,
best first, as the in-process search orders them.

A change the matcher has stored is forwarded to the servers whose shards it touches, under
the matcher's writer lock (so in order), each waited for up to a deadline proportional to its
size (`_deadline`: seconds). A server not reached in time (down, hung) is *behind*: no query is
answered without it (`Unavailable`, naming it), and before each query the matcher asks it,
outside the lock, to read its shards again from index.sqlite (`Reload`), which holds the change;
once it has said yes, it refuses searches itself until it has read them. Each forward carries
its number, and a Reload or load the last number it holds (pb.ShardFence): a change arriving
there after it, late, is dropped. Nothing is ever answered "no match" for want of a shard. A
member's erasure is forwarded to a server behind too, not waited for under the lock
(`holding`, asked after, waits for it): one that takes it no longer holds the member's shards.

A look-up server without a data dir (on another machine) cannot read them: it says so
(FAILED_PRECONDITION), and the matcher loads it instead, in a thread, from its own memory
(`Load`, in parts below the message size limit). Changes do not wait for a load: from the
moment it starts, each change forwarded is queued for the server and replayed to it, in
order, once the load is in (a change both in the load and the queue is harmless:
realtime/shards.py); queries are refused ("being loaded") until then. At the matcher's start,
each server that says it holds nothing yet is loaded at once (`attach`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.realtime.lookups import Answer
from blindmatch.matcher.realtime.shards import (
    ERASE_MEMBER,
    ShardChange,
    ShardSource,
    describe_shards,
)
from blindmatch.matcher.rpc import lookup_wire as wire
from blindmatch.matcher.rpc.lookup_service import MAX_MESSAGE_BYTES
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

SEARCH_SECONDS = 10.0  # a search that takes longer fails the query (DEADLINE: UNAVAILABLE)
# A forwarded change's deadline (under the writer lock): this floor, plus its size at this
# rate: far below a LAN's, and below a server's building of tables for it (a first 1,500 rows,
# 200 kB: 2.0 s wall on a loaded 2-core host), at most the 60 s every change had before (a
# server hung held every member's change that long: docs/operations.md "A hung look-up server").
FORWARD_FLOOR_SECONDS = 5.0
FORWARD_BYTES_PER_SECOND = 250_000
FORWARD_MAX_SECONDS = 60.0
RELOAD_SECONDS = 2.0  # asking a server that is behind to read its shards again
# Streaming a server without a data dir its shards (changes queued meanwhile): a
# 250,000-record shard took 4 s (docs/scale.md), so this allows tens of millions.
LOAD_SECONDS = 600.0
# At the matcher's start, how long to wait for each look-up server to answer whether it
# holds anything yet (one not up by then is loaded at the first query that finds it empty).
START_SECONDS = 30.0


class LookupServers:
    """The matcher's look-up servers: server i holds shard i of len(addresses)."""

    def __init__(
        self,
        addresses: Sequence[str],
        key: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("no look-up servers")
        self.addresses = list(addresses)
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._credentials = credentials
        self._channels = [self._channel(a) for a in self.addresses]
        # The start-up question to servers not up yet (`attach`) goes on channels of its
        # own, so the forwarding channels do not start in gRPC's reconnect back-off.
        self._asking: list[grpc.Channel] = []
        self._stubs = [pb_grpc.LookupServerStub(c) for c in self._channels]
        self._lock = threading.Lock()  # forwards and catching up, in order
        self._behind: dict[int, str] = {}  # server -> why
        # The forwards' order (pb.ShardFence): this matcher's id, the last change's number
        self._id, self._seq = uuid.uuid4().hex[:12], 0
        # server behind asked to read its shards again -> which asking (`_catch_up`);
        # a change forwarded meanwhile voids it
        self._reloading: dict[int, int] = {}
        self._asks = itertools.count(1)
        # server behind -> the members' erasures it took since (`holding`): an erasure is
        # forwarded to a server behind too (it drops the member's shards whatever it missed)
        self._took: dict[int, set[tuple[str, str]]] = {}
        self._loading: set[int] = set()  # servers being loaded (each by its own thread)
        # server being loaded -> the changes forwarded since its load started, in order:
        # replayed to it once the load is in
        self._pending: dict[int, list[tuple[int, ShardChange]]] = {}
        self._source: ShardSource | None = None
        # server behind -> the members' erasures sent to it, not waited for (`forward`)
        self._late: dict[int, list[tuple[tuple[str, str], grpc.Future]]] = {}

    def attach(self, source: ShardSource) -> None:
        """Where a server without a data dir is loaded from (the matcher's indexes). Each
        server that says it holds nothing yet is loaded now, in the background (one not up
        yet: at the first query that finds it empty, or behind)."""
        self._source = source
        self._asking = [
            self._channel(a, ("grpc.use_local_subchannel_pool", 1)) for a in self.addresses
        ]
        threading.Thread(target=self._load_empty, name="blindmatch-load", daemon=True).start()

    def _load_empty(self) -> None:
        """Ask each server, at start, whether it holds anything; load those that do not."""
        calls = [
            pb_grpc.LookupServerStub(channel).Describe.future(
                pb.ShardDescribeRequest(),
                timeout=START_SECONDS,
                metadata=self._metadata,
                wait_for_ready=True,  # started just after the matcher: wait for it a while
            )
            for channel in self._asking
        ]
        for i, call in enumerate(calls):
            try:
                state = call.result()
            except (grpc.RpcError, ValueError):  # not up, or the matcher is stopping
                continue
            if not state.loaded and (state.shard, state.shards) == (i, len(self.addresses)):
                with self._lock:
                    if i not in self._loading:
                        log.info("%s holds nothing yet: loading it", self._name(i))
                        self._start_load(i)
        for channel in self._asking:
            channel.close()

    def _channel(self, address: str, *extra: tuple[str, int]) -> grpc.Channel:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A restarted server is found again within a second, not after gRPC's default
            # back-off (up to two minutes of refused queries).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            *extra,
        ]
        if self._credentials is None:
            return grpc.insecure_channel(address, options=options)
        return grpc.secure_channel(address, self._credentials, options=options)

    def describe(self) -> str:
        return describe_shards(self.addresses)

    @property
    def loading(self) -> list[int]:
        """The servers being loaded (or taking the changes made meanwhile) now."""
        return sorted(self._loading)

    def close(self) -> None:
        for channel in [*self._asking, *self._channels]:
            channel.close()

    def _name(self, i: int) -> str:
        return f"look-up server {self.addresses[i]} (shard {i} of {len(self.addresses)})"

    # -- queries -----------------------------------------------------------------------------

    def search(
        self,
        project: str,
        members: Sequence[str],
        queries: npt.NDArray[np.uint64],
        threshold: float,
    ) -> Answer:
        """Each query row's hits in every partner's index: every server's shards, merged."""
        if not members:  # no partner has an index: no shard to ask
            return [{} for _ in range(len(queries))]
        for i in sorted(self._loading):
            raise errors.Unavailable(f"{self._name(i)} {self._behind.get(i, BEING_LOADED)}")
        if self._behind:
            self._catch_up()
            for i, why in sorted(self._behind.items()):
                raise errors.Unavailable(f"{self._name(i)} {why}")
        request = pb.ShardSearchRequest(
            project=project,
            members=list(members),
            clk_bits=queries.shape[1] * 64,
            clks=np.ascontiguousarray(queries).tobytes(),
            threshold=threshold,
        )
        calls = [
            stub.Search.future(request, timeout=SEARCH_SECONDS, metadata=self._metadata)
            for stub in self._stubs
        ]
        answer: Answer = [{m: [] for m in members} for _ in range(len(queries))]
        empty: list[int] = []  # servers that hold nothing yet: loaded, all at once
        for i, call in enumerate(calls):
            try:
                reply = call.result()
            except grpc.RpcError as exc:
                if wire.code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION:
                    empty.append(i)
                    continue
                for other in calls[i + 1 :]:
                    other.cancel()
                raise errors.Unavailable(
                    f"{self._name(i)} did not answer: {wire.reason(exc)}; no answer is given "
                    "without every shard"
                ) from None
            if empty:
                continue
            self._check_state(i, reply.state)
            for q, k, ref, score in zip(
                reply.queries, reply.members, reply.refs, reply.scores, strict=True
            ):
                answer[q][members[k]].append((ref, score))
        if empty:
            with self._lock:
                for i in empty:
                    self._start_load(i)
            raise errors.Unavailable(f"{self._name(empty[0])} {BEING_LOADED}")
        for per_member in answer:
            for hits in per_member.values():
                if len(hits) > 1:
                    hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return answer

    def _check_state(self, i: int, state: pb.ShardState) -> None:
        if (state.shard, state.shards) != (i, len(self.addresses)):
            raise errors.Unavailable(
                f"{self._name(i)} holds shard {state.shard} of {state.shards}: start it with "
                f"--shard {i}/{len(self.addresses)}, or list the matcher's --lookup-server "
                "addresses in shard order"
            )
        if i in self._behind:
            raise errors.Unavailable(f"{self._name(i)} {self._behind[i]}")

    def behind(self) -> list[str]:
        """The servers that missed a change stored so far, named (not one being loaded: the
        changes made meanwhile are queued for it, and the load is read from memory)."""
        with self._lock:
            return [self._name(i) for i in sorted(self._behind) if i not in self._loading]

    def holding(self, project: str, member: str) -> list[str]:
        """The servers that may still hold the member's shards after its erasure: those
        behind (not being loaded) that did not take the erasure's change (one sent to a
        server behind is waited for here, outside the lock, up to its RELOAD_SECONDS)."""
        with self._lock:
            sent = [c for calls in self._late.values() for e, c in calls if e == (project, member)]
        for call in sent:
            wire.failure_of(call)  # (blocks until it ends: its deadline bounds it)
        with self._lock:
            for i in list(self._late):
                self._harvest(i)
            return [self._name(i) for i in sorted(self._behind) if i not in self._loading
                    and (project, member) not in self._took.get(i, ())]  # fmt: skip

    def _harvest(self, i: int) -> None:
        """The erasures sent to server i while it was behind that have ended, taken or not;
        the lock is held."""
        left = []
        for erased, call in self._late.pop(i, []):
            if not call.done():
                left.append((erased, call))
                continue
            failure = wire.failure_of(call)
            if not failure:
                if i in self._behind:  # (behind for another change: this one it took)
                    self._took.setdefault(i, set()).add(erased)
                continue
            self._took.get(i, set()).discard(erased)
            if i in self._behind and i not in self._loading:
                self._behind[i] = (f"missed an index change ({failure}) and has not read its "
                                   "shards again yet")  # fmt: skip
            log.warning("%s did not take %s's erasure in project %s (%s): it holds their "
                        "shards until it reads them again", self._name(i), erased[1],
                        erased[0], failure)  # fmt: skip
        if left:
            self._late[i] = left

    def catch_up(self) -> None:
        """Have each server that is behind read its shards again, or be loaded, now (an
        erasure retried in the background: usecases/erasure_retry.py)."""
        if self._behind:
            self._catch_up()

    def _catch_up(self) -> None:
        """Ask each server behind to read its shards again (they hold every change stored
        so far), outside the lock (a server hung: up to RELOAD_SECONDS); one that cannot be
        asked stays behind, and so does one a change is forwarded to meanwhile (it skips it,
        `forward`: its read may have begun before that change was stored)."""
        with self._lock:
            after = pb.ShardFence(matcher=self._id, seq=self._seq)
            asked = {}
            for i in sorted(self._behind):
                if i in self._loading or i in self._reloading:
                    continue
                self._reloading[i] = ask = next(self._asks)
                call = self._stubs[i].Reload.future(
                    pb.ShardReloadRequest(after=after),
                    timeout=RELOAD_SECONDS,
                    metadata=self._metadata,
                    wait_for_ready=True,  # a server just started: its channel reconnects
                )
                asked[i] = (ask, call)
        ended = {i: wire.outcome(call) for i, (_, call) in asked.items()}  # (each waited for)
        with self._lock:
            for i, (ask, _) in asked.items():
                if self._reloading.get(i) != ask:  # it missed a change meanwhile
                    continue
                del self._reloading[i]
                failure, code = ended[i]
                if not failure:
                    log.info("%s reads its shards again from index.sqlite", self._name(i))
                    del self._behind[i]
                    self._took.pop(i, None)
                    self._late.pop(i, None)  # (what it reads holds them: pb.ShardFence)
                elif code == grpc.StatusCode.FAILED_PRECONDITION:  # no data dir
                    self._start_load(i)
                else:
                    self._behind[i] = (
                        f"missed an index change and cannot be asked to read its shards "
                        f"again: {failure}; start it (it reads them from index.sqlite, "
                        "or is loaded by the matcher)"
                    )

    def _start_load(self, i: int) -> None:
        """Load server i in a thread (unless one is at it); the lock is held. Changes
        forwarded from now on are queued for it (`forward`), replayed after the load."""
        if self._source is None:
            self._behind[i] = "has no data dir, and this matcher has no indexes to load it from"
            return
        self._late.pop(i, None)  # (the load holds them; one arriving after is dropped)
        self._behind[i] = BEING_LOADED
        self._reloading.pop(i, None)
        self._took.pop(i, None)  # (what it holds after is the load's, then the queue's)
        if i in self._loading:
            return
        self._loading.add(i)
        self._pending[i] = []
        after = pb.ShardFence(matcher=self._id, seq=self._seq)
        threading.Thread(
            target=self._load, args=(i, self._source, after), name="blindmatch-load", daemon=True
        ).start()

    def _load(self, i: int, source: ShardSource, after: pb.ShardFence) -> None:
        """Stream server i its shards, then replay the changes queued meanwhile; changes
        are never held up by it (the lock is taken only to hand over the queue). Each way
        out ends the load under the lock once (`_replay`, `_end_load`): a load started
        after that is another's."""
        started = time.perf_counter()
        try:
            # Every change stored in memory before this point is in these rows; every one
            # forwarded after `_start_load` is in the queue (some in both: harmless).
            indexes, thresholds = source(i, len(self.addresses))
            rows = sum(len(part.refs) for part in indexes.values())
            # Found empty just now (it started): this channel may still be reconnecting.
            self._stubs[i].Describe(pb.ShardDescribeRequest(), timeout=RELOAD_SECONDS,
                                    metadata=self._metadata, wait_for_ready=True)  # fmt: skip
            self._stubs[i].Load(
                wire.load_parts(i, len(self.addresses), indexes, thresholds, after),
                timeout=LOAD_SECONDS,
                metadata=self._metadata,
            )
        except ValueError:  # its channel closed: the matcher is stopping
            self._end_load(i, "is not loaded: the matcher is stopping")
            return
        except grpc.RpcError as exc:
            why = f"could not be loaded: {wire.reason(exc)}"
            log.warning("%s %s", self._name(i), why)
            self._end_load(i, f"{why}; the matcher tries again at the next query")
            return
        except Exception as exc:  # the matcher's own side failed: say so on each query
            log.exception("loading %s failed", self._name(i))
            self._end_load(i, f"could not be loaded: {exc}")
            return
        replayed = self._replay(i)
        if replayed is not None:
            log.info(
                "%s loaded with %d records of %d indexes in %.1f s (then %d changes made "
                "meanwhile)",
                self._name(i),
                rows,
                len(indexes),
                time.perf_counter() - started,
                replayed,
            )

    def _replay(self, i: int) -> int | None:
        """Send server i, in order, the changes queued since its load started, until none
        is left: then it is caught up, and no longer behind. Returns how many, or None if
        one did not reach it (it stays behind: the next query has it loaded again)."""
        replayed = 0
        while True:
            with self._lock:
                queued = self._pending.get(i, [])
                if not queued:
                    self._pending.pop(i, None)
                    self._loading.discard(i)
                    self._behind.pop(i, None)
                    self._took.pop(i, None)
                    return replayed
                self._pending[i] = []
            for seq, change in queued:
                message = wire.change_message(change, pb.ShardFence(matcher=self._id, seq=seq))
                try:
                    self._stubs[i].Apply(message, timeout=_deadline(message),
                                         metadata=self._metadata)  # fmt: skip
                except ValueError:  # its channel closed: the matcher is stopping
                    self._end_load(i, "is not loaded: the matcher is stopping")
                    return None
                except grpc.RpcError as exc:
                    log.warning("%s did not take a change made during its load: %s",
                                self._name(i), wire.reason(exc))  # fmt: skip
                    self._end_load(
                        i,
                        f"missed an index change made during its load ({wire.reason(exc)}); "
                        "the matcher loads it again at the next query",
                    )
                    return None
                replayed += 1

    def _end_load(self, i: int, why: str) -> None:
        """A load that did not bring server i up to date: it stays behind, saying why."""
        with self._lock:
            self._behind[i] = why
            self._pending.pop(i, None)
            self._loading.discard(i)

    # -- changes -----------------------------------------------------------------------------

    def forward(self, change: ShardChange) -> None:
        """Tell each server whose shards `change` touches (one being loaded: queued for it,
        replayed after its load); one not reached within its deadline (`_deadline`) falls
        behind."""
        with self._lock:
            self._seq += 1
            sent = pb.ShardFence(matcher=self._id, seq=self._seq)
            calls = []
            for i, stub in enumerate(self._stubs):
                part = change.part(i, len(self._stubs))
                if part is None:
                    continue
                if i in self._pending:
                    self._pending[i].append((self._seq, part))
                    continue
                late = i in self._behind
                if late:  # (an asking to read its shards again in flight: it may miss this)
                    self._reloading.pop(i, None)
                if late and change.erase != ERASE_MEMBER:
                    continue
                # (an erasure to a server behind: a small change, waiting for a server just
                # started to reconnect, not waited for here: `holding` does, not under the
                # writer's lock, which a server down would hold up to RELOAD_SECONDS)
                message = wire.change_message(part, sent)
                call = stub.Apply.future(message, metadata=self._metadata,
                                         timeout=RELOAD_SECONDS if late else _deadline(message),
                                         wait_for_ready=late or None)  # fmt: skip
                if late:
                    self._late.setdefault(i, []).append(((change.project, change.member), call))
                    continue
                calls.append((i, call))
            erased = (change.project, change.member)
            for i, call in calls:
                failure = wire.failure_of(call)
                if not failure:
                    continue
                self._took.get(i, set()).discard(erased)
                self._behind[i] = (
                    f"missed an index change ({failure}) and has not read its shards again yet"
                )
                log.warning(
                    "%s did not take a change to %s's index in project %s (%s): no query is "
                    "answered until it reads its shards again from index.sqlite",
                    self._name(i),
                    change.member or "every member",
                    change.project,
                    failure,
                )


BEING_LOADED = "is being loaded by the matcher (it has no data dir); try again in a moment"


def _deadline(message: pb.ShardChange) -> float:
    """How long a forward of `message` is waited for (FORWARD_FLOOR_SECONDS)."""
    return min(
        FORWARD_MAX_SECONDS, FORWARD_FLOOR_SECONDS + message.ByteSize() / FORWARD_BYTES_PER_SECOND
    )
