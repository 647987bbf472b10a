"""Per-member limits on calls in flight, so one member cannot starve the others.

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

from blindmatch.matcher.domain import (
    DEFAULT_STREAMS_PER_MEMBER,
    QUERY_STREAM_IDLE_SECONDS,
    QUERY_STREAMS_IN_ALL,
    QUERY_STREAMS_PER_MEMBER,
)
from blindmatch.matcher.errors import Busy


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
    """One open QueryStream: when it last answered, and whether it is answering now."""

    key: tuple[str, str]
    cancel: Callable[[], object]
    last: float
    answering: bool = False
    ended: bool = False


class QueryStreams:
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
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="blindmatch-query-streams", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @contextmanager
    def open(
        self, project: str, member: str, cancel: Callable[[], object]
    ) -> Iterator[QueryStream]:
        key = (project, member)
        with self._lock:
            mine = sum(1 for s in self._open if s.key == key)
            if mine >= self.per_member or len(self._open) >= self.in_all:
                raise Busy(
                    f"member {member!r} of {project!r} has {mine} query streams open and "
                    f"the matcher {len(self._open)} (at most {self.per_member} a member, "
                    f"{self.in_all} in all); this stream was refused: ask by single Query "
                    "calls, or close a stream"
                )
            stream = QueryStream(key, cancel, time.monotonic())
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

    def _loop(self) -> None:
        while not self._stopped.wait(min(30.0, self.idle_seconds / 4)):
            self.end_idle()
