"""The matcher's side of its look-up servers: fan a query out, merge, forward changes.

`LookupServers` is `realtime.shards.RemoteLookups` over gRPC. The i-th address given to
`serve --lookup-server` holds shard i of as many as there are addresses (each server says
which it holds in every reply, and a mismatch is refused). A query goes to every server
at once (one unary call each, in flight together) and waits for all: its latency is the
slowest server's look-up plus one round trip. The hits are merged per query and partner,
best first, as the in-process search orders them.

A change the matcher has stored is forwarded to the servers whose shards it touches, under
the matcher's writer lock (so in order), each waited for up to a deadline proportional to
its size (`wire.deadline`: seconds). A server not reached in time (down, hung) is *behind*:
no query asks it (its shards are searched in the matcher's own copy, as a resting one's,
below; without that copy: `Unavailable`, naming it), and before each query the matcher asks
it, outside the lock, to read its shards again from index.sqlite (`Reload`), which holds the
change; once it has said yes, it refuses searches itself until it has read them, and counts
as behind until the matcher has seen it ready (`_rereading`). Each forward carries its
number, and a Reload or load the last number it holds (pb.ShardFence): a change arriving
there after it, late, is dropped; so is one of an earlier matcher process arriving after
this one's (the fence's epoch: realtime/shards.py). Nothing is answered "no match" for
want of a shard. A member's erasure is forwarded to a server behind too, not waited for
under the lock (`holding`, asked after, waits for it): one that takes it no longer holds
the member's shards.

A server that misses a search's or a Reload's deadline (hung; or down while behind: a Reload
waits for a server to reconnect) *rests* (`_rest`): queries no longer ask it, each paying
that deadline again; its shards' hits come from the matcher's own copy of the indexes
(`search`'s `local`), so nothing is lost, and a probe in the background asks it again every
BACKOFF_SECONDS until it answers in time. A change that falls in its shards is not sent to
it (it would hold the writer's lock its deadline): it is behind at once (`forward`).

Which servers are behind or being loaded, their channels, and the loading of a server
without a data dir (from the matcher's own memory): rpc/lookup_load.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.realtime.lookups import Answer
from blindmatch.matcher.realtime.shards import ERASE_MEMBER, ShardChange, shard_of
from blindmatch.matcher.rpc import lookup_wire as wire
from blindmatch.matcher.rpc.lookup_load import BEING_LOADED, ServerStates
from blindmatch.matcher.rpc.older_peer import LOOKUP_FLEET, is_older, older_peer_error
from blindmatch.matcher.rpc.status import answered
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher")


class LookupServers(ServerStates):
    """The matcher's look-up servers: server i holds shard i of len(addresses)."""

    # -- queries -----------------------------------------------------------------------------

    def search(
        self,
        project: str,
        members: Sequence[str],
        queries: npt.NDArray[np.uint64],
        threshold: float,
        local: Callable[[], Answer] | None = None,
    ) -> Answer:
        """Each query row's hits in every partner's index: every server's shards, merged.
        `local`: the same search in the matcher's own copy of the indexes (full and current:
        realtime/indexes.py), where the hits of a server that cannot answer from current
        shards are taken from: one resting (`_rest`), one behind, being loaded, or reading
        its shards again (`_rereading`, or one that says so itself: asked, and taken from
        here while it refuses); without it, such a server refuses."""
        if not members:  # no partner has an index: no shard to ask
            return [{} for _ in range(len(queries))]
        if self._behind:
            self._catch_up()
        with self._lock:  # (not asked: one behind or being loaded could answer stale shards)
            aside = {i: self._behind.get(i, BEING_LOADED) for i in sorted(self._loading)}
            for i, why in [*sorted(self._behind.items()), *sorted(self._resting.items())]:
                aside.setdefault(i, self._resting.get(i, why))
            rereading = dict(self._rereading)
        if aside and local is None:
            raise self.refusal(*next(iter(aside.items())))
        request = pb.ShardSearchRequest(
            project=project,
            members=list(members),
            clk_bits=queries.shape[1] * 64,
            clks=np.ascontiguousarray(queries).tobytes(),
            threshold=threshold,
        )
        calls = {
            i: stub.Search.future(request, timeout=wire.SEARCH_SECONDS, metadata=self._metadata)
            for i, stub in enumerate(self._stubs)
            if i not in aside
        }
        answer: Answer = [{m: [] for m in members} for _ in range(len(queries))]
        empty: list[int] = []  # servers that hold nothing yet: loaded, all at once
        for i, call in calls.items():
            try:
                reply = call.result()
            except grpc.RpcError as exc:
                code = wire.code_of(exc)
                # (one reading its shards again refuses until its read is in: so does one
                # that reads them for a reason the matcher does not know of, restarted, say)
                reading = i in rereading and code != grpc.StatusCode.DEADLINE_EXCEEDED
                if local is not None and (
                    reading or (code == grpc.StatusCode.UNAVAILABLE and answered(exc))
                ):
                    aside[i] = f"is reading its shards again ({wire.reason(exc)})"
                    continue
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    empty.append(i)
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    why = self._rest(i, f"did not answer a search in {wire.SEARCH_SECONDS:g} s")
                    if local is not None:
                        aside[i] = why
                        continue
                for other in calls.values():
                    other.cancel()
                if is_older(exc):  # (a refusal to act on an older server, not an outage)
                    raise older_peer_error(self._name(i), "Search", LOOKUP_FLEET) from None
                raise errors.Unavailable(
                    f"{self._name(i)} did not answer: "
                    f"{wire.reason(exc, grpc.StatusCode.UNAVAILABLE)}; no answer is given "
                    "without every shard"
                ) from None
            why = self._check_state(i, reply.state, rereading.get(i))
            if why and local is None:
                raise self.refusal(i, why)
            if why:  # (behind since: it missed a change)
                aside[i] = why
                continue
            if empty and local is None:  # (refused below)
                continue
            for q, k, ref, score in zip(
                reply.queries, reply.members, reply.refs, reply.scores, strict=True
            ):
                answer[q][members[k]].append((ref, score))
        if empty:
            with self._lock:
                for i in empty:
                    self._start_load(i, empty=True)
            if local is None:
                raise errors.Unavailable(f"{self._name(empty[0])} {BEING_LOADED}")
            aside.update((i, BEING_LOADED) for i in empty)
        if aside:
            assert local is not None
            _take_local(answer, members, local(), set(aside), len(self._stubs))
        for per_member in answer:
            for hits in per_member.values():
                if len(hits) > 1:
                    hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return answer

    def _check_state(self, i: int, state: pb.ShardState, ask: int | None = None) -> str:
        """Server i answered a search from `state`: refused if it holds another shard; why it
        is behind since ("": it is not). `ask`: it was reading its shards again when the
        search was sent (`_rereading`): answering, it has read them."""
        if (state.shard, state.shards) != (i, len(self.addresses)):
            raise errors.Unavailable(
                f"{self._name(i)} holds shard {state.shard} of {state.shards}: start it with "
                f"--shard {i}/{len(self.addresses)}, or list the matcher's --lookup-server "
                "addresses in shard order"
            )
        if ask is not None and state.ready:
            self._read_again(i, ask)
        with self._lock:
            return self._behind.get(i, "")

    def _read_again(self, i: int, ask: int) -> None:
        """Server i, asked to read its shards again (`ask`), is seen ready: it has."""
        with self._lock:
            if self._rereading.get(i) == ask:
                del self._rereading[i]
                log.info("%s has read its shards again: queries ask it", self._name(i))

    def _reread(self) -> None:
        """Ask each server reading its shards again whether it is done (Describe, outside
        the lock, up to RELOAD_SECONDS; one whose read failed reads again when asked so:
        rpc/lookup_service.py); one that is done no longer counts as behind."""
        self._heard(self._ask_done())

    def _ask_done(self) -> dict[int, tuple[int, grpc.Future]]:
        """`_reread`'s Describes, sent to every server reading its shards again at once and
        not waited for (`_heard` does): a caller with other calls to wait for (`holding`,
        `catch_up`) sends these first, so that it waits one deadline for all, not two."""
        with self._lock:
            asked = dict(self._rereading)
        calls = {}
        for i, ask in asked.items():
            try:
                calls[i] = (ask, self._stubs[i].Describe.future(
                    pb.ShardDescribeRequest(), timeout=wire.RELOAD_SECONDS,
                    metadata=self._metadata))  # fmt: skip
            except ValueError:  # its channel closed: the matcher is stopping
                return {}
        return calls

    def _heard(self, calls: dict[int, tuple[int, grpc.Future]]) -> None:
        """`_ask_done`'s answers: a server that says it is ready has read its shards."""
        for i, (ask, call) in calls.items():
            try:
                if call.result().ready:
                    self._read_again(i, ask)
            except grpc.RpcError:
                continue

    def behind(self) -> list[str]:
        """The servers that missed a change stored so far, named, and those reading their
        shards again that are not done yet (asked now: `_reread`); not one being loaded (the
        changes made meanwhile are queued for it, and the load is read from memory)."""
        self._reread()
        with self._lock:
            late = set(self._behind) | set(self._rereading)
            return [self._name(i) for i in sorted(late) if i not in self._loading]

    def holding(self, project: str, member: str) -> list[str]:
        """The servers that may still hold the member's shards after its erasure: those
        behind that did not take the erasure's change (one sent to a server behind is
        waited for here, outside the lock, up to its RELOAD_SECONDS), and those being loaded
        again (`_refilling`: they keep what they held until the load, which takes the
        erasure, is in; not one being loaded for the first time, which holds nothing), and
        those reading their shards again that are not done yet (`_rereading`: the erasure
        waits in their queue, and they hold what they held until the read is in, or still if
        it fails)."""
        with self._lock:
            sent = [c for calls in self._late.values() for e, c in calls if e == (project, member)]
        asked = self._ask_done()  # (in flight with the erasures: one wait for both)
        for call in sent:
            wire.failure_of(call)  # (blocks until it ends: its deadline bounds it)
        self._heard(asked)
        with self._lock:
            for i in list(self._late):
                self._harvest(i)
            late = {i for i in self._behind
                    if (i not in self._loading or i in self._refilling)
                    and (project, member) not in self._took.get(i, ())}  # fmt: skip
            return [self._name(i) for i in sorted(late | set(self._rereading))]

    def _harvest(self, i: int) -> None:
        """The erasures sent to server i while it was behind that have ended, taken or not;
        the lock is held."""
        left = []
        for erased, call in self._late.pop(i, []):
            if not call.done():
                left.append((erased, call))
                continue
            failure, code = wire.outcome(call, "Apply")
            if not failure:
                # (behind for another change: this one it took; not one reading its shards,
                # which queues it: it holds the member's until that read is in)
                state = call.result()
                if i in self._behind and (state.ready or not state.loaded):
                    self._took.setdefault(i, set()).add(erased)
                continue
            self._took.get(i, set()).discard(erased)
            if i in self._behind and i not in self._loading:
                older = code is grpc.StatusCode.UNIMPLEMENTED  # (an older blindmatch)
                self._behind[i] = self._older(i, "Apply") if older else (
                    f"missed an index change ({failure}) and has not read its shards again yet"
                )  # fmt: skip
            log.warning("%s did not take %s's erasure in project %s (%s): it holds their "
                        "shards until it reads them again", self._name(i), erased[1],
                        erased[0], failure)  # fmt: skip
        if left:
            self._late[i] = left

    def catch_up(self) -> None:
        """Have each server that is behind read its shards again, or be loaded, now (an
        erasure retried in the background: usecases/erasure_retry.py); and each reading
        them again asked whether it is done (`_reread`: one whose read failed tries again)."""
        asked = self._ask_done()  # (in flight with the Reloads: one wait for both)
        if self._behind:
            self._catch_up()
        self._heard(asked)

    def _catch_up(self, only: int | None = None) -> None:
        """Ask each server behind to read its shards again (they hold every change stored
        so far), outside the lock (a server hung: up to RELOAD_SECONDS); one that cannot be
        asked stays behind, and so does one a change is forwarded to meanwhile (it skips it,
        `forward`: its read may have begun before that change was stored). One resting is
        asked only by its probe (`only`: that server alone); one that does not answer in
        time rests (`_rest`)."""
        with self._lock:
            after = self._fence(self._seq)
            asked = {}
            for i in sorted(self._behind):
                if i in self._loading or i in self._reloading:
                    continue
                if (i in self._resting) if only is None else (i != only):
                    continue
                self._reloading[i] = ask = next(self._asks)
                call = self._stubs[i].Reload.future(
                    pb.ShardReloadRequest(after=after),
                    timeout=wire.RELOAD_SECONDS,
                    metadata=self._metadata,
                    wait_for_ready=True,  # a server just started: its channel reconnects
                )
                asked[i] = (ask, call)
        ended = {i: wire.outcome(call, "Reload") for i, (_, call) in asked.items()}  # (waited)
        for i, (_, code) in ended.items():
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._rest(i, f"did not answer in {wire.RELOAD_SECONDS:g} s when asked to read "
                           "its shards again")  # fmt: skip
            else:
                with self._lock:
                    self._resting.pop(i, None)  # (it answered, whatever it said)
        with self._lock:
            for i, (ask, call) in asked.items():
                if self._reloading.get(i) != ask:  # it missed a change meanwhile
                    continue
                del self._reloading[i]
                failure, code = ended[i]
                if failure and code == grpc.StatusCode.UNAVAILABLE and answered(call.exception()):
                    self._refused(i, failure)  # (it can not read them: a newer layout, say)
                elif not failure:
                    log.info("%s reads its shards again from index.sqlite", self._name(i))
                    del self._behind[i]
                    self._took.pop(i, None)
                    self._late.pop(i, None)  # (what it reads holds them: pb.ShardFence)
                    self._rereading[i] = ask  # (until it is seen done: `_check_state`)
                elif code == grpc.StatusCode.FAILED_PRECONDITION:  # no data dir
                    self._start_load(i)
                elif code == grpc.StatusCode.UNIMPLEMENTED:  # an older blindmatch, not down
                    self._behind[i] = self._older(i, "Reload")
                else:
                    self._behind[i] = (
                        f"missed an index change and cannot be asked to read its shards "
                        f"again: {failure}; start it (it reads them from index.sqlite, "
                        "or is loaded by the matcher)"
                    )

    def _refused(self, i: int, failure: str) -> None:
        """Server i, behind, refused to read its shards again (`failure`: why, as it said:
        a store of a layout it does not know, say): logged when the reason is new; it stays
        behind, its shards searched in the matcher's own copy, and is asked again. The lock
        is held."""
        why = f"missed an index change and refused to read its shards again: {failure}"
        if self._behind.get(i) != why:
            log.warning("%s %s; no query is answered through it until it does (its shards "
                        "are searched in the matcher's own copy)", self._name(i), why)  # fmt: skip
        self._behind[i] = why

    # -- a server that does not answer in time ---------------------------------------------

    def _rest(self, i: int, why: str) -> str:
        """Server i missed a query's or a Reload's deadline (hung, or its host gone): queries
        no longer ask it, so that each does not wait for that deadline again; its shards are
        searched in the matcher's own copy instead (`search`'s `local`) until a probe in
        the background, every BACKOFF_SECONDS, finds it answering. Returns why it rests."""
        why = (f"{why}: not asked by queries until it answers again (asked every "
               f"{wire.BACKOFF_SECONDS:g} s in the background)")  # fmt: skip
        with self._lock:
            if i not in self._resting:
                log.warning("%s %s; its shards are searched in the matcher's own copy "
                            "meanwhile", self._name(i), why)  # fmt: skip
            self._resting[i] = why
            if i in self._probing:
                return why
            self._probing.add(i)
        threading.Thread(target=self._probe, args=(i,), name="blindmatch-probe",
                         daemon=True).start()  # fmt: skip
        return why

    def _probe(self, i: int) -> None:
        """Ask server i again every BACKOFF_SECONDS until it answers in time: one behind is
        asked to read its shards again (`_catch_up`), another only to describe itself."""
        while not self._closed.wait(wire.BACKOFF_SECONDS):
            with self._lock:
                behind = i in self._behind and i not in self._loading
            code = None
            try:
                if behind:
                    self._catch_up(only=i)
                else:
                    call = self._stubs[i].Describe.future(pb.ShardDescribeRequest(),
                                                          timeout=wire.RELOAD_SECONDS,
                                                          metadata=self._metadata)  # fmt: skip
                    _, code = wire.outcome(call)
            except ValueError:  # its channel closed: the matcher is stopping
                break
            with self._lock:
                if not behind and code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._resting.pop(i, None)
                if i not in self._resting:
                    log.info("%s answers again: queries ask it", self._name(i))
                    break
        with self._lock:
            self._probing.discard(i)

    # -- changes -----------------------------------------------------------------------------

    def forward(self, change: ShardChange) -> None:
        """Tell each server whose shards `change` touches (one being loaded: queued for it,
        replayed after its load); one not reached within its deadline (`wire.deadline`) falls
        behind, and so does one resting, at once: it is not sent the change (it is known not
        to answer; waited for, it held every member's change its deadline, under the index
        writer lock), and is asked to read its shards again once it answers (`_probe`)."""
        with self._lock:
            self._unrecord()
            self._seq += 1
            sent = self._fence(self._seq)
            calls = []
            for i, stub in enumerate(self._stubs):
                part = change.part(i, len(self._stubs))
                if part is None:
                    continue
                if i in self._pending:
                    self._pending[i].append((self._seq, part))
                    continue
                if i in self._resting and i not in self._behind:  # known not to answer
                    self._behind[i] = self._missed(i, change, "not sent: it rests")
                late = i in self._behind
                if late:  # (an asking to read its shards again in flight: it may miss this)
                    self._reloading.pop(i, None)
                if late and change.erase != ERASE_MEMBER:
                    continue
                # (an erasure to a server behind: a small change, waiting for a server just
                # started to reconnect, not waited for here: `holding` does, not under the
                # writer's lock, which a server down would hold up to RELOAD_SECONDS)
                message = wire.change_message(part, sent)
                wait = wire.RELOAD_SECONDS if late else wire.deadline(message)
                call = stub.Apply.future(message, metadata=self._metadata, timeout=wait,
                                         wait_for_ready=late or None)  # fmt: skip
                if late:
                    self._late.setdefault(i, []).append(((change.project, change.member), call))
                    continue
                calls.append((i, call))
            erased = (change.project, change.member)
            for i, call in calls:
                failure, code = wire.outcome(call, "Apply")
                if not failure:
                    if i in self._rereading and call.result().ready:  # (its read is in)
                        del self._rereading[i]
                        log.info("%s has read its shards again: queries ask it", self._name(i))
                    continue
                self._took.get(i, set()).discard(erased)
                if code is grpc.StatusCode.UNIMPLEMENTED:  # an older blindmatch, not down
                    self._behind[i] = self._older(i, "Apply")
                    continue
                self._behind[i] = self._missed(i, change, failure)

    def _missed(self, i: int, change: ShardChange, failure: str) -> str:
        """Server i did not take `change` (`failure`: why): logged; why it is behind."""
        log.warning(
            "%s did not take a change to %s's index in project %s (%s): no query is "
            "answered through it until it reads its shards again from index.sqlite",
            self._name(i),
            change.member or "every member",
            change.project,
            failure,
        )
        return f"missed an index change ({failure}) and has not read its shards again yet"


def _take_local(
    answer: Answer, members: Sequence[str], local: Answer, shards: set[int], of: int
) -> None:
    """Add to `answer` the hits of `local` (the matcher's own copy, every shard) that fall
    in `shards` of `of` (those of servers resting)."""
    for q, per_member in enumerate(local):
        for m in members:
            answer[q][m].extend(hit for hit in per_member.get(m, ())
                                if shard_of(hit[0], of) in shards)  # fmt: skip
