"""The matcher's look-up servers as it knows them (rpc/lookup_client.py builds on this):
their channels, which are behind or being loaded, and loading one without a data dir.

A look-up server without a data dir (on another machine) cannot read its shards from
index.sqlite: it says so (FAILED_PRECONDITION), and the matcher loads it instead, in a
thread, from its own memory (`Load`, in parts below the message size limit). Changes do not
wait for a load: from the moment it starts, each change forwarded is queued for the server
and replayed to it, in order, once the load is in (a change both in the load and the queue
is harmless: realtime/shards.py); until then queries take its shards from the matcher's
own copy (without one: refused, "being loaded"). At the
matcher's start, each server that says it holds nothing yet is loaded at once (`attach`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc

from blindmatch.matcher import errors
from blindmatch.matcher.realtime.shards import ShardChange, ShardSource, describe_shards
from blindmatch.matcher.rpc import lookup_wire as wire
from blindmatch.matcher.rpc.lookup_service import MAX_MESSAGE_BYTES
from blindmatch.matcher.rpc.older_peer import LOOKUP_FLEET, is_older, older_why
from blindmatch.matcher.storage.shard_source import (
    NOTHING_MISSED,
    LastStop,
    forget_stop,
    record_stop,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

BEING_LOADED = "is being loaded by the matcher (it has no data dir); try again in a moment"
# A server the matcher's previous process left behind, or may have (why: `LastStop.cause`).
STALE_AT_START = (
    "may have missed an index change before the matcher started ({cause}) and has not read "
    "its shards again yet"
)
# No record of the previous process's servers (`behind_at_last_stop` None).
NO_RECORD = (
    "the matcher's last run left no record of its look-up servers: it was killed, or a "
    "change was forwarded as it stopped"
)


class ServerStates:
    """The matcher's look-up servers, what it knows of each, and their loads (server i
    holds shard i of len(addresses)); `LookupServers` queries and forwards over it."""

    def __init__(
        self,
        addresses: Sequence[str],
        key: str,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        epoch: int | None = None,
        data_dir: str | Path | None = None,
        last_stop: LastStop | None = NOTHING_MISSED,
    ) -> None:
        """`epoch`: this matcher process's place after its earlier ones (pb.ShardFence;
        storage/shard_source.py `lookup_epoch`); by default its start time. `data_dir`: where
        the servers behind as it stops are recorded for the next start (`close`); `last_stop`:
        what its previous process recorded (None: nothing, every server may have missed a
        change): those it left behind are behind from the start (`attach` has them read
        their shards again)."""
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
        # The forwards' order (pb.ShardFence): this matcher's id, the last change's number,
        # and when this process started (orders it after the matcher's earlier processes)
        self._id, self._seq = uuid.uuid4().hex[:12], 0
        self._epoch = epoch if epoch is not None else time.time_ns()
        # server behind asked to read its shards again -> which asking (`_catch_up`);
        # a change forwarded meanwhile voids it
        self._reloading: dict[int, int] = {}
        self._asks = itertools.count(1)
        # server behind -> the members' erasures it took since (`holding`): an erasure is
        # forwarded to a server behind too (it drops the member's shards whatever it missed)
        self._took: dict[int, set[tuple[str, str]]] = {}
        self._loading: set[int] = set()  # servers being loaded (each by its own thread)
        # servers being loaded that may hold shards from before (not known to have started
        # empty): they keep them, a member erased among them too, until the load is in
        # (`LookupServers.holding` names them until then)
        self._refilling: set[int] = set()
        # server being loaded -> the changes forwarded since its load started, in order:
        # replayed to it once the load is in
        self._pending: dict[int, list[tuple[int, ShardChange]]] = {}
        self._source: ShardSource | None = None
        # server behind -> the members' erasures sent to it, not waited for (`forward`)
        self._late: dict[int, list[tuple[tuple[str, str], grpc.Future]]] = {}
        # server that missed a query's or a Reload's deadline -> why: not asked by queries
        # (its shards searched in the matcher's own copy) until a probe finds it answering
        self._resting: dict[int, str] = {}
        self._probing: set[int] = set()  # servers a probe thread asks (`LookupServers._rest`)
        # server that said yes to a Reload -> which asking (`_catch_up`): it reads its shards
        # again (and holds the old ones, an erased member's too, until that read is in, or
        # still if it fails), so it counts as behind (`behind`, `holding`, `close`) until it
        # is seen ready (a search it answers, or a ShardState saying `ready`); queries take
        # its shards from the matcher's own copy meanwhile
        self._rereading: dict[int, int] = {}
        self._closed = threading.Event()  # (ends the probes)
        # server that answered a call of the matcher's UNIMPLEMENTED -> why (`_older`): an
        # older blindmatch, said so while that is why it is behind
        self._older_ones: dict[int, str] = {}
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._recorded = False  # the servers behind recorded at `close` (a forward after: void)
        everyone = set(range(len(self.addresses)))
        cause = NO_RECORD if last_stop is None else last_stop.cause(self.addresses)
        self._at_start = STALE_AT_START.format(cause=cause)
        # The record this process started from (a server that read its shards after it, with
        # index.sqlite unchanged, missed nothing: `_load_empty`)
        self._stop_id = last_stop.id if last_stop is not None else ""
        for i in everyone if last_stop is None else last_stop.stale(self.addresses):
            self._behind[i] = self._at_start

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
                timeout=wire.START_SECONDS,
                metadata=self._metadata,
                wait_for_ready=True,  # started just after the matcher: wait for it a while
            )
            for channel in self._asking
        ]
        for i, call in enumerate(calls):
            try:
                state = call.result()
            except grpc.RpcError as exc:  # not up (asked at the first query), or older
                if is_older(exc):
                    with self._lock:
                        self._older(i, "Describe")
                continue
            except ValueError:  # the matcher is stopping
                continue
            if (state.shard, state.shards) != (i, len(self.addresses)):
                continue
            if not state.loaded:
                with self._lock:
                    if i not in self._loading:
                        log.info("%s holds nothing yet: loading it", self._name(i))
                        self._start_load(i, empty=True)
            elif self._stop_id and state.read_after_stop == self._stop_id:
                self._read_since_stop(i)
        for channel in self._asking:
            channel.close()
        with self._lock:
            stale = [i for i, why in self._behind.items() if why == self._at_start]
        if stale and not self._closed.is_set():  # (one not up: asked at the first query)
            log.warning("%s %s: asking them to read their shards again", ", ".join(
                self._name(i) for i in stale), self._at_start)  # fmt: skip
            self._catch_up()

    def _read_since_stop(self, i: int) -> None:
        """Server i (a data dir's) began reading its shards after the matcher's previous
        process stopped, nothing stored since (pb.ShardState `read_after_stop`: the record this
        process started from): what it reads holds every change that process stored, so it
        is not behind for what the record says (another server at its address then, servers
        named otherwise) and is not asked to read them again. Unless this process has
        forwarded a change already: one skipped for it, behind, may be missing from its read."""
        with self._lock:
            if self._behind.get(i) != self._at_start or self._seq:
                return
            if i in self._reloading or i in self._rereading or i in self._loading:
                return
            del self._behind[i]
        log.info("%s read its shards after the matcher's last stop: not asked to read them "
                 "again", self._name(i))  # fmt: skip

    def _catch_up(self, only: int | None = None) -> None:
        """Ask the servers behind to read their shards again (`LookupServers`)."""
        raise NotImplementedError

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
        """Stop; record for the next start which servers are behind (`record_stop`)."""
        self._closed.set()
        with self._lock:  # (a forward in flight ends first)
            if self._data_dir is not None:
                try:
                    behind = set(self._behind) | set(self._rereading)
                    record_stop(self._data_dir, self.addresses, behind)
                    self._recorded = True
                except OSError as exc:  # (the next start has every server read again)
                    log.warning("could not record which look-up servers are behind: %s", exc)
        for channel in [*self._asking, *self._channels]:
            channel.close()

    def _unrecord(self) -> None:
        """A change forwarded after `close` recorded the servers behind (a request still
        running): the record may miss a server that misses it, so it goes; the lock is held."""
        if self._recorded and self._data_dir is not None:
            self._recorded = False
            forget_stop(self._data_dir)

    def _fence(self, seq: int) -> pb.ShardFence:
        """This process's `seq`-th forward's place in its order (0: before any)."""
        return pb.ShardFence(matcher=self._id, seq=seq, epoch=self._epoch)

    def _name(self, i: int) -> str:
        return f"look-up server {self.addresses[i]} (shard {i} of {len(self.addresses)})"

    def older_of(self, names: Sequence[str]) -> dict[str, str]:
        """Of `names` (as `holding` or `behind` name them), those behind because they run an
        older blindmatch than the matcher's, each with what is said of it after its name
        (`older_why`, as a query it refuses says)."""
        with self._lock:
            named = {self._name(i): why for i, why in self._older_ones.items()
                     if self._behind.get(i) == why}  # fmt: skip
        return {name: named[name] for name in names if name in named}

    def _start_load(self, i: int, *, empty: bool = False) -> None:
        """Load server i in a thread (unless one is at it); the lock is held. Changes
        forwarded from now on are queued for it (`forward`), replayed after the load.
        `empty`: it said it holds nothing yet (else it may hold shards from before, an
        erased member's among them, until the load is in: `_refilling`)."""
        if self._source is None:
            self._behind[i] = "has no data dir, and this matcher has no indexes to load it from"
            return
        if empty:
            self._refilling.discard(i)
        else:
            self._refilling.add(i)
        self._late.pop(i, None)  # (the load holds them; one arriving after is dropped)
        self._behind[i] = BEING_LOADED
        self._reloading.pop(i, None)
        self._rereading.pop(i, None)
        self._took.pop(i, None)  # (what it holds after is the load's, then the queue's)
        if i in self._loading:
            return
        self._loading.add(i)
        self._pending[i] = []
        after = self._fence(self._seq)
        threading.Thread(
            target=self._load, args=(i, self._source, after), name="blindmatch-load", daemon=True
        ).start()

    def _load(self, i: int, source: ShardSource, after: pb.ShardFence) -> None:
        """Stream server i its shards, then replay the changes queued meanwhile; changes
        are never held up by it (the lock is taken only to hand over the queue). Each way
        out ends the load under the lock once (`_replay`, `_end_load`): a load started
        after that is another's."""
        started = time.perf_counter()
        rpc = "Describe"
        try:
            # Every change stored in memory before this point is in these rows; every one
            # forwarded after `_start_load` is in the queue (some in both: harmless).
            indexes, thresholds = source(i, len(self.addresses))
            rows = sum(len(part.refs) for part in indexes.values())
            # Found empty just now (it started): this channel may still be reconnecting.
            self._stubs[i].Describe(pb.ShardDescribeRequest(), timeout=wire.RELOAD_SECONDS,
                                    metadata=self._metadata, wait_for_ready=True)  # fmt: skip
            rpc = "Load"
            self._stubs[i].Load(
                wire.load_parts(i, len(self.addresses), indexes, thresholds, after),
                timeout=wire.LOAD_SECONDS,
                metadata=self._metadata,
            )
        except ValueError:  # its channel closed: the matcher is stopping
            self._end_load(i, "is not loaded: the matcher is stopping")
            return
        except grpc.RpcError as exc:
            if is_older(exc):  # (an older blindmatch, not a server down)
                with self._lock:
                    why = self._older(i, rpc)
                self._end_load(i, why)
                return
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
                    self._refilling.discard(i)
                    self._behind.pop(i, None)
                    self._rereading.pop(i, None)
                    self._took.pop(i, None)
                    return replayed
                self._pending[i] = []
            for seq, change in queued:
                message = wire.change_message(change, self._fence(seq))
                try:
                    self._stubs[i].Apply(message, timeout=wire.deadline(message),
                                         metadata=self._metadata)  # fmt: skip
                except ValueError:  # its channel closed: the matcher is stopping
                    self._end_load(i, "is not loaded: the matcher is stopping")
                    return None
                except grpc.RpcError as exc:
                    if is_older(exc):
                        with self._lock:
                            why = self._older(i, "Apply")
                        self._end_load(i, why)
                        return None
                    log.warning("%s did not take a change made during its load: %s",
                                self._name(i), wire.reason(exc))  # fmt: skip
                    self._end_load(
                        i,
                        f"missed an index change made during its load ({wire.reason(exc)}); "
                        "the matcher loads it again at the next query",
                    )
                    return None
                replayed += 1

    def _older(self, i: int, rpc: str) -> str:
        """Server i answered the call `rpc` UNIMPLEMENTED: it runs an older blindmatch than the
        matcher's (rpc/older_peer.py), which is why it is behind, not that it is down. Logged
        (once while it stays so), and returned: what the caller records as why it is behind,
        and what a query it refuses says (`refusal`). The lock is held."""
        why = older_why(rpc, LOOKUP_FLEET)
        if self._older_ones.get(i) != why or self._behind.get(i) != why:
            log.warning("%s %s; until then no query is answered through it (its shards are "
                        "searched in the matcher's own copy)", self._name(i), why)  # fmt: skip
        self._older_ones[i] = why
        return why

    def refusal(self, i: int, why: str) -> errors.ServiceError:
        """A query refused for want of server i, behind for `why`: FAILED_PRECONDITION where
        it is an older blindmatch (as a `Search` it does not know is), else UNAVAILABLE."""
        if self._older_ones.get(i) == why:
            return errors.FailedPrecondition(f"{self._name(i)} {why}")
        return errors.Unavailable(f"{self._name(i)} {why}")

    def _end_load(self, i: int, why: str) -> None:
        """A load that did not bring server i up to date: it stays behind, saying why."""
        with self._lock:
            self._behind[i] = why
            self._pending.pop(i, None)
            self._loading.discard(i)
            self._refilling.discard(i)  # (behind, not being loaded: `holding` names it)
