"""The matcher's side of its look-up servers: fan a query out, merge, forward changes.

`LookupServers` is `realtime.shards.RemoteLookups` over gRPC. The i-th address given to
`serve --lookup-server` holds shard i of as many as there are addresses (each server says
which it holds in every reply, and a mismatch is refused). A query goes to every server
at once (one unary call each, in flight together) and waits for all: its latency is the
slowest server's look-up plus one round trip. The hits are merged per query and partner,
best first, as the in-process search orders them.

A change the matcher has stored is forwarded to the servers whose shards it touches,
under the matcher's writer lock (so in order). A server the forward does not reach is
*behind*: no query is answered without it (`Unavailable`, naming it), and before each
query the matcher asks it to read its shards again from index.sqlite (`Reload`), which
holds the change; once it has said yes, it refuses searches itself until it has read
them. Nothing is ever answered as "no match" for want of a shard. A member's erasure is
forwarded to a server behind as well (dropping its shards is right whatever else it missed):
one that takes it no longer holds them (`holding`), though it stays behind. That erasure is
sent without being waited for under the writer lock (a server down would hold every index
change up to RELOAD_SECONDS): `holding`, which the erasure asks after, outside the lock,
waits for it; a server asked to read its shards again or loaded first has every erasure in
flight to it end, so that none arrives after what it reads (a member's later records).

A look-up server without a data dir (on another machine) cannot read them: it says so
(FAILED_PRECONDITION, to `Reload`, or to `Search` while it holds nothing: just started),
and the matcher loads it instead, in a thread: it streams the server's shards of every
index from its own memory (`Load`, in parts below the message size limit). Index changes
do not wait for a load: from the moment a load starts (before it gathers its rows), each
change forwarded is queued for the server being loaded (the member's change is
acknowledged as soon as it is durable in index.sqlite, as always), and replayed to it, in
order, once the load is in; a change both in the rows and in the queue is harmless
(replayed in order over a later state, each ref ends as its last operation left it:
realtime/shards.py). Queries are refused (`Unavailable`, "being loaded") until the server
has taken the load and every queued change. At the matcher's start, each server that
says it holds nothing yet is loaded at once (`attach`), not at the first query.
"""

from __future__ import annotations

import logging
import threading
import time
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
from blindmatch.matcher.rpc.lookup_service import MAX_MESSAGE_BYTES
from blindmatch.matcher.rpc.lookup_wire import change_message, load_parts
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

SEARCH_SECONDS = 10.0  # a search that takes longer fails the query (DEADLINE: UNAVAILABLE)
FORWARD_SECONDS = 60.0  # a forwarded change (up to the largest index change)
RELOAD_SECONDS = 2.0  # asking a server that is behind to read its shards again
# Streaming a server without a data dir its shards (index changes are queued for it
# meanwhile): a 250,000-record shard took 4 s (docs/scale.md), so this allows tens of
# millions.
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
        # server behind -> the members' erasures it took since (`holding`): an erasure is
        # forwarded to a server behind too (it drops the member's shards whatever it missed)
        self._took: dict[int, set[tuple[str, str]]] = {}
        self._loading: set[int] = set()  # servers being loaded (each by its own thread)
        # server being loaded -> the changes forwarded since its load started, in order:
        # replayed to it once the load is in
        self._pending: dict[int, list[ShardChange]] = {}
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
                if _code(exc) == grpc.StatusCode.FAILED_PRECONDITION:
                    empty.append(i)
                    continue
                for other in calls[i + 1 :]:
                    other.cancel()
                raise errors.Unavailable(
                    f"{self._name(i)} did not answer: {_reason(exc)}; no answer is given "
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
            _failure(call)  # (blocks until it ends: its deadline bounds it)
        with self._lock:
            for i in list(self._late):
                self._harvest(i)
            return [self._name(i) for i in sorted(self._behind) if i not in self._loading
                    and (project, member) not in self._took.get(i, ())]  # fmt: skip

    def _harvest(self, i: int, wait: bool = False) -> None:
        """The erasures sent to server i while it was behind that have ended (`wait`: all,
        each waited for), taken or not; the lock is held."""
        left = []
        for erased, call in self._late.pop(i, []):
            if not (wait or call.done()):
                left.append((erased, call))
                continue
            failure = _failure(call)
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
        """Ask each server that is behind to read its shards again (which hold every
        change stored so far); one that cannot be asked stays behind."""
        with self._lock:
            for i in sorted(self._behind):
                self._harvest(i, wait=True)  # (no erasure sent before may arrive after)
                try:
                    self._stubs[i].Reload(
                        pb.ShardReloadRequest(),
                        timeout=RELOAD_SECONDS,
                        metadata=self._metadata,
                        wait_for_ready=True,  # a server just started: its channel reconnects
                    )
                except grpc.RpcError as exc:
                    if _code(exc) == grpc.StatusCode.FAILED_PRECONDITION:  # no data dir
                        self._start_load(i)
                        continue
                    self._behind[i] = (
                        f"missed an index change and cannot be asked to read its shards "
                        f"again: {_reason(exc)}; start it (it reads them from index.sqlite, "
                        "or is loaded by the matcher)"
                    )
                    continue
                log.info("%s reads its shards again from index.sqlite", self._name(i))
                del self._behind[i]
                self._took.pop(i, None)

    def _start_load(self, i: int) -> None:
        """Load server i in a thread (unless one is at it); the lock is held. Changes
        forwarded from now on are queued for it (`forward`), replayed after the load."""
        if self._source is None:
            self._behind[i] = "has no data dir, and this matcher has no indexes to load it from"
            return
        self._harvest(i, wait=True)  # (no erasure sent before may arrive after the load)
        self._behind[i] = BEING_LOADED
        self._took.pop(i, None)  # (what it holds after is the load's, then the queue's)
        if i in self._loading:
            return
        self._loading.add(i)
        self._pending[i] = []
        threading.Thread(
            target=self._load, args=(i, self._source), name="blindmatch-load", daemon=True
        ).start()

    def _load(self, i: int, source: ShardSource) -> None:
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
            self._stubs[i].Load(
                load_parts(i, len(self.addresses), indexes, thresholds),
                timeout=LOAD_SECONDS,
                metadata=self._metadata,
            )
        except ValueError:  # its channel closed: the matcher is stopping
            self._end_load(i, "is not loaded: the matcher is stopping")
            return
        except grpc.RpcError as exc:
            log.warning("%s could not be loaded: %s", self._name(i), _reason(exc))
            self._end_load(
                i,
                f"could not be loaded: {_reason(exc)}; the matcher tries again at the next query",
            )
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
            for change in queued:
                try:
                    self._stubs[i].Apply(
                        change_message(change), timeout=FORWARD_SECONDS, metadata=self._metadata
                    )
                except ValueError:  # its channel closed: the matcher is stopping
                    self._end_load(i, "is not loaded: the matcher is stopping")
                    return None
                except grpc.RpcError as exc:
                    log.warning("%s did not take a change made during its load: %s",
                                self._name(i), _reason(exc))  # fmt: skip
                    self._end_load(
                        i,
                        f"missed an index change made during its load ({_reason(exc)}); "
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
        replayed after its load); one not reached falls behind."""
        with self._lock:
            calls = []
            for i, stub in enumerate(self._stubs):
                part = change.part(i, len(self._stubs))
                if part is None:
                    continue
                if i in self._pending:
                    self._pending[i].append(part)
                    continue
                if i in self._behind and change.erase != ERASE_MEMBER:
                    continue
                # (an erasure to a server behind: a small change, waiting for a server just
                # started to reconnect, not waited for here: `holding` does, not under the
                # writer's lock, which a server down would hold up to RELOAD_SECONDS)
                late = i in self._behind
                call = stub.Apply.future(change_message(part), metadata=self._metadata,
                                         timeout=RELOAD_SECONDS if late else FORWARD_SECONDS,
                                         wait_for_ready=late or None)  # fmt: skip
                if late:
                    self._late.setdefault(i, []).append(((change.project, change.member), call))
                    continue
                calls.append((i, call))
            erased = (change.project, change.member)
            for i, call in calls:
                try:
                    call.result()
                except grpc.RpcError as exc:
                    self._took.get(i, set()).discard(erased)
                    self._behind[i] = (
                        f"missed an index change ({_reason(exc)}) and has not read its "
                        "shards again yet"
                    )
                    log.warning(
                        "%s did not take a change to %s's index in project %s (%s): no query "
                        "is answered until it reads its shards again from index.sqlite",
                        self._name(i),
                        change.member or "every member",
                        change.project,
                        _reason(exc),
                    )


BEING_LOADED = "is being loaded by the matcher (it has no data dir); try again in a moment"


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if hasattr(exc, "code") else None


def _failure(call: grpc.Future) -> str:
    """Why `call` failed, once it has ended ("": it did not)."""
    try:
        exc = call.exception()
    except grpc.FutureCancelledError:  # (its channel closed: the matcher is stopping)
        return "cancelled: the matcher is stopping"
    return "" if exc is None else _reason(exc)


def _reason(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{detail} [{code.name if code else 'UNKNOWN'}]"
