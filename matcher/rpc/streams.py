"""Limits on streams in flight, so no member (and nobody without a token) can starve the others.

Every streaming call, whatever its RPC, first passes `StreamGuard` (from the
authenticating interceptor, auth.py, before the handler reads a message): at most so
many streams per member and RPC, per member in all and in all (a fraction of the
request threads, so unary calls always find one free); a stream whose client sends
nothing (or takes nothing sent) for `idle_seconds` is ended with DEADLINE_EXCEEDED; and
revoking or rotating a member's token, its erasure or its project's expiry ends its open
streams at once (`end_member`, `end_project`), marking them so that nothing they carry is
committed afterwards (`OpenStream.check`, called inside the committing transaction).

The matcher serves every member from one thread pool. A member that opens many
uploads or result streams at once would hold those threads (and memory and
disk bandwidth) while everyone else waits; `MemberLimiter` caps how many
streaming calls each member has in flight and refuses the next one at once
with `Busy` (RESOURCE_EXHAUSTED, marked retryable), which the client retries
with backoff. `QueryStreams` does the same for the long-lived query streams,
which hold a thread while they wait for the next question, and ends idle ones.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from blindmatch.matcher.domain import (
    DEFAULT_STREAMS_PER_MEMBER,
    MEMBER_STREAMS,
    QUERY_STREAM_IDLE_SECONDS,
    QUERY_STREAMS_IN_ALL,
    QUERY_STREAMS_PER_MEMBER,
    STREAM_IDLE_SECONDS,
    STREAMS_IN_ALL,
    STREAMS_PER_RPC,
)
from blindmatch.matcher.errors import (
    Busy,
    DeadlineExceeded,
    ServiceError,
)


class MemberLimiter:
    """At most `limit` calls in flight per (project, member); the next is refused."""

    def __init__(self, limit: int = DEFAULT_STREAMS_PER_MEMBER) -> None:
        if limit < 1:
            raise ValueError("a member needs at least one call in flight")
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def slot(self, project: str, member: str, what: str) -> Iterator[None]:
        key = (project, member)
        with self._lock:
            if self._in_flight[key] >= self.limit:
                raise Busy(
                    f"member {member!r} of {project!r} already has {self.limit} uploads, "
                    f"result fetches or run watches in flight (the limit per member); "
                    f"this {what} was refused; retry when one finishes"
                )
            self._in_flight[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[key] -= 1
                if not self._in_flight[key]:
                    del self._in_flight[key]

    def in_flight(self, project: str, member: str) -> int:
        with self._lock:
            return self._in_flight[(project, member)]


# -- query streams ------------------------------------------------------------------------------


@dataclass
class QueryStream:
    """One open QueryStream: when it last answered, and whether it is answering now.
    `cancel` ends it now (idle: CANCELLED, the session asks again on a new stream);
    `interrupt(why)` ends it as soon as its question, if any, is answered, told `why`."""

    key: tuple[str, str]
    cancel: Callable[[], object]
    last: float
    answering: bool = False
    ended: bool = False
    interrupt: Callable[[ServiceError], object] | None = None


class _IdleSweep:
    """A daemon thread, from `start` until `close`, calling `end_idle` every quarter of
    `idle_seconds` (at most every `most` seconds)."""

    idle_seconds: float

    def __init__(self, name: str, most: float) -> None:
        self._most = most
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def end_idle(self) -> int:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stopped.wait(min(self._most, self.idle_seconds / 4)):
            self.end_idle()


class QueryStreams(_IdleSweep):
    """Open query streams, at most `per_member` a member and `in_all` in all; idle ones ended.

    A query stream holds one of the matcher's request threads for as long as it is open,
    asking or not, so the matcher caps them (the pool has room for every other call besides)
    and ends one that has asked nothing for `idle_seconds` (the client sessions open a new
    one on their next query). A stream past a cap is refused with `Busy`; the sessions then
    ask by single calls instead.
    """

    def __init__(
        self,
        per_member: int = QUERY_STREAMS_PER_MEMBER,
        in_all: int = QUERY_STREAMS_IN_ALL,
        idle_seconds: float = QUERY_STREAM_IDLE_SECONDS,
    ) -> None:
        if per_member < 1 or in_all < per_member:
            raise ValueError("query streams: need 1 <= per_member <= in_all")
        self.per_member = per_member
        self.in_all = in_all
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._open: list[QueryStream] = []
        self._ended: ServiceError | None = None  # why, once `end_all` has been called
        super().__init__("blindmatch-query-streams", 30.0)

    @contextmanager
    def open(
        self,
        project: str,
        member: str,
        cancel: Callable[[], object],
        interrupt: Callable[[ServiceError], object] | None = None,
    ) -> Iterator[QueryStream]:
        """Count a stream in (see `QueryStream` for `cancel` and `interrupt`), or refuse it:
        `Busy` past a cap; once `end_all` has been called, the error it was given."""
        key = (project, member)
        with self._lock:
            if self._ended is not None:  # opened just as the matcher began to stop
                raise self._ended
            mine = sum(1 for s in self._open if s.key == key)
            if mine >= self.per_member or len(self._open) >= self.in_all:
                raise Busy(
                    f"member {member!r} of {project!r} has {mine} query streams open and "
                    f"the matcher {len(self._open)} (at most {self.per_member} a member, "
                    f"{self.in_all} in all); this stream was refused: ask by single Query "
                    "calls, or close a stream"
                )
            stream = QueryStream(key, cancel, time.monotonic(), interrupt=interrupt)
            self._open.append(stream)
        try:
            yield stream
        finally:
            with self._lock:
                self._open.remove(stream)

    def begin(self, stream: QueryStream) -> bool:
        """Mark `stream` answering; False when it was ended as idle (leave its request be)."""
        with self._lock:
            stream.answering = not stream.ended
            return stream.answering

    def done(self, stream: QueryStream) -> None:
        with self._lock:
            stream.answering = False
            stream.last = time.monotonic()

    def open_streams(self, project: str, member: str) -> int:
        with self._lock:
            return sum(1 for s in self._open if s.key == (project, member))

    def end_idle(self) -> int:
        """End every stream that has been waiting longer than `idle_seconds`; how many."""
        cutoff = time.monotonic() - self.idle_seconds
        with self._lock:
            idle = [s for s in self._open if not s.answering and not s.ended and s.last < cutoff]
            for s in idle:
                s.ended = True
        for s in idle:
            s.cancel()
        return len(idle)

    def end_all(self, why: ServiceError) -> int:
        """End every open stream told `why`, at once unless it is answering a question (then
        once that is answered), and refuse any opened later (the matcher is stopping:
        server.py `RunningServer.stop`; a stream waiting for its client's next question
        would hold the stop for all of its grace); how many."""
        with self._lock:
            self._ended = why
            streams = [s for s in self._open if not s.ended]
        for s in streams:
            if s.interrupt is not None:
                s.interrupt(why)
            else:
                s.cancel()
        return len(streams)


# -- every stream -------------------------------------------------------------------------------

# Streams whose waits for the client are their own business: a query session's stream
# waits between questions, and QueryStreams ends it when idle (its own, longer limit).
IDLE_BY_DESIGN = frozenset({"QueryStream"})
# A client is given this many times the idle limit to take a message sent.
SEND_PATIENCE = 5


@dataclass(eq=False)
class OpenStream:
    """One open stream: whose, of which RPC, and what it is waiting for."""

    key: tuple[str, str]  # (project, member); ("", "") for the operator
    method: str
    end: Callable[[ServiceError], object]  # ends the call with this error's status, now
    user: str = ""  # the member's named user whose token opened it; "": the member's own
    waiting_since: float | None = None  # for the client's next message
    sending_since: float | None = None  # for the client to take a message sent
    ended: ServiceError | None = None  # why the matcher ended it
    ended_at: float = 0.0  # when (its status then waits for the client, at most so long)
    closed: bool = False

    def check(self) -> None:
        """Raise why the matcher ended this stream, if it did (before committing what it
        carried: nothing a stream sends after its token's revocation is kept)."""
        if self.ended is not None:
            raise self.ended


def _whose(key: tuple[str, str]) -> str:
    return f"member {key[1]!r} of {key[0]!r}" if key[1] else "the operator"


class StreamGuard(_IdleSweep):
    """Every open stream: capped per member and RPC (`per_rpc`), per member (`per_member`)
    and in all (`in_all`); ended when idle for `idle_seconds`, or when its member's access
    ends (`end_member`, `end_project`)."""

    def __init__(
        self,
        per_member: int = MEMBER_STREAMS,
        in_all: int = STREAMS_IN_ALL,
        idle_seconds: float = STREAM_IDLE_SECONDS,
        per_rpc: dict[str, int] | None = None,
    ) -> None:
        if per_member < 1 or in_all < per_member:
            raise ValueError("streams: need 1 <= per member <= in all")
        if idle_seconds <= 0:
            raise ValueError("streams: the idle limit must be positive")
        self.per_member = per_member
        self.in_all = in_all
        self.idle_seconds = idle_seconds
        self.per_rpc = dict(STREAMS_PER_RPC if per_rpc is None else per_rpc)
        self._lock = threading.Lock()
        self._open: list[OpenStream] = []
        super().__init__("blindmatch-streams", 1.0)

    # -- opening and closing -------------------------------------------------------------------

    def open(
        self,
        project: str,
        member: str,
        method: str,
        end: Callable[[ServiceError], object],
        user: str = "",
    ) -> OpenStream:
        """Count a new stream in, or refuse it (`Busy`) past a cap; `close` it when done.
        A member's named users' streams count as the member's (`user` says whose token)."""
        key = (project, member)
        with self._lock:
            mine = [s for s in self._open if s.key == key]
            same = sum(1 for s in mine if s.method == method)
            cap = self.per_rpc.get(method)
            if cap is not None and same >= cap:
                raise Busy(
                    f"{_whose(key)} already has {same} {method} streams open, at most {cap} "
                    f"(the matcher's limit per member); this one was refused: end one first"
                )
            if len(mine) >= self.per_member:
                raise Busy(
                    f"{_whose(key)} already has {len(mine)} streams open, at most "
                    f"{self.per_member} (serve --max-member-streams); this {method} was "
                    "refused: end one first"
                )
            if len(self._open) >= self.in_all:
                raise Busy(
                    f"the matcher has {len(self._open)} streams open, at most {self.in_all} "
                    f"(serve --max-streams); this {method} was refused; retry shortly"
                )
            stream = OpenStream(key, method, end, user)
            self._open.append(stream)
        return stream

    def close_stream(self, stream: OpenStream) -> None:
        """Count `stream` out (again: a no-op)."""
        with self._lock:
            if not stream.closed:
                stream.closed = True
                self._open.remove(stream)

    def requests(self, stream: OpenStream, requests: Iterator[Any]) -> Iterator[Any]:
        """`requests`, timed: a wait for the client's next message is what `idle_seconds`
        limits."""
        while True:
            stream.waiting_since = time.monotonic()
            try:
                request = next(requests)
            except StopIteration:
                return
            finally:
                stream.waiting_since = None
            yield request

    def responses(self, stream: OpenStream, responses: Iterator[Any]) -> Iterator[Any]:
        """`responses`, timed (a message the client does not take for `idle_seconds` ends
        the stream); `stream` is closed when they end, however they end."""
        try:
            for response in responses:
                stream.sending_since = time.monotonic()
                yield response
                stream.sending_since = None
        finally:
            self.close_stream(stream)

    # -- ending --------------------------------------------------------------------------------

    def open_streams(self, project: str, member: str, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self._open
                if s.key == (project, member) and (method is None or s.method == method)
            )

    def ended_streams(self, project: str, member: str) -> int:
        """How many of the member's streams the matcher ended that are still open (their
        status waits for the client to take what was sent before it)."""
        with self._lock:
            return sum(1 for s in self._open if s.key == (project, member) and s.ended)

    def end_member(
        self,
        project: str,
        member: str,
        why: Callable[[OpenStream], ServiceError],
        user: str | None = None,
    ) -> int:
        """End open streams of `member` of `project` now, with `why`; how many. `user`
        None: every one, opened with the member's token or any of its users' (its token
        revoked, which revokes its users; its data erased, which deletes them); "": those
        of the member's own token (rotated); a name: that user's (revoked). `why` a stream
        ends with, by its kind (`ended_because`: a watch's words are not an upload's)."""
        key = (project, member)
        return self._end(lambda s: s.key == key and (user is None or s.user == user), why)

    def end_project(self, project: str, why: ServiceError) -> int:
        """End every open stream of the members of `project` now, with `why`; how many."""
        return self._end(lambda s: s.key[1] != "" and s.key[0] == project, lambda s: why)

    def end_idle(self) -> int:
        """End every stream that waited longer than `idle_seconds` for its client's next
        message, or `SEND_PATIENCE` times that for its client to take one sent (a message
        of up to 16 MiB over a slow link takes a while)."""
        now = time.monotonic()
        waited, sent = now - self.idle_seconds, now - self.idle_seconds * SEND_PATIENCE

        def idle(s: OpenStream) -> bool:
            waiting = s.waiting_since is not None and s.method not in IDLE_BY_DESIGN
            return (waiting and s.waiting_since < waited) or (  # type: ignore[operator]
                s.sending_since is not None and s.sending_since < sent
            )

        def why(s: OpenStream) -> ServiceError:
            limit = "(the matcher's limit, serve --stream-idle-seconds); the stream is ended"
            if s.sending_since is not None:
                took = self.idle_seconds * SEND_PATIENCE
                return DeadlineExceeded(
                    f"{s.method}: the client took no message for {took:g} s {limit}"
                )
            return DeadlineExceeded(
                f"{s.method}: no message from the client for {self.idle_seconds:g} s {limit} "
                "and nothing it sent is kept"
            )

        # A stream ended with its status (rpc/callreads.py `answer`) whose status still waits
        # behind a message its client does not take is cancelled (`end` again).
        with self._lock:
            stuck = [s for s in self._open if s.ended is not None and 0 < s.ended_at < sent]
            for s in stuck:
                s.ended_at = -1.0
        for s in stuck:
            s.end(s.ended)  # type: ignore[arg-type]
        return self._end(idle, why)

    def _end(
        self, which: Callable[[OpenStream], bool], why: Callable[[OpenStream], ServiceError]
    ) -> int:
        now = time.monotonic()
        with self._lock:
            chosen = [s for s in self._open if s.ended is None and which(s)]
            for s in chosen:
                s.ended, s.ended_at = why(s), now
        for s in chosen:
            assert s.ended is not None
            s.end(s.ended)
        return len(chosen)


def ended_because(
    kind: type[ServiceError], what: str, watch: str
) -> Callable[[OpenStream], ServiceError]:
    """Why a member's stream is ended (`what` happened; `StreamGuard.end_member`): a watch
    is told that it is closed and `watch` (what the member may do), any other stream that
    nothing it sent that was not acknowledged is kept (before 2026-12-06 a watch was told
    that too, an upload's words)."""

    def why(s: OpenStream) -> ServiceError:
        if s.method == "Watch":
            return kind(
                f"{what}; this watch, open before that, is closed: no later match of its "
                f"records is told (in a two-server project S1 and S2 forget them); {watch}"
            )
        return kind(f"{what}; this stream is ended and nothing it sent that was not "
                    "acknowledged is kept")  # fmt: skip

    return why
