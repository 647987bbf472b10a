"""Per-member limits on calls in flight, so one member cannot starve the others.

The matcher serves every member from one thread pool. A member that opens many
uploads or result streams at once would hold those threads (and memory and
disk bandwidth) while everyone else waits; `MemberLimiter` caps how many
streaming calls each member has in flight and refuses the next one at once
with `Busy` (RESOURCE_EXHAUSTED, marked retryable), which the client retries
with backoff.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from matcher.errors import Busy

DEFAULT_STREAMS_PER_MEMBER = 4


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
