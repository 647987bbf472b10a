"""A rate limit per key: a token bucket (a burst, then a steady rate), in memory.

Used for calls that cost the matcher a durable write each although they change nothing a
member asked to change: `DescribeProject` and a member's `ExportAudit` each append an audit
entry (fsynced), so a member calling them in a loop could make the matcher fsync hundreds of
times a second and grow its log without bound. A refused call writes nothing. The limit is
per token (`NestedRateLimit`): each named user's, and the member's own, have their own, and
all of a member's together have a wider one, so one user's loop does not hold up its
colleagues, and many users cannot multiply what the member may cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class RateLimit:
    """At most `burst` calls at once per key, refilled at `per_minute` a minute."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: Hashable) -> float:
        """0.0 if a call for `key` may go ahead now (and counts it); otherwise the seconds
        until one may, and nothing is counted."""
        return self._take(key, count=True)

    def wait(self, key: Hashable) -> float:
        """What `take` would answer now, counting nothing."""
        return self._take(key, count=False)

    def _take(self, key: Hashable, count: bool) -> float:
        now = self._clock()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * rate)
            if tokens >= 1.0:
                if count:
                    self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


class NestedRateLimit:
    """A rate limit per key (`inner`) within a wider one per group of keys (`outer`): a call
    goes ahead when both allow it, and then counts against both."""

    def __init__(self, inner: RateLimit, outer: RateLimit) -> None:
        self.inner = inner
        self.outer = outer
        self._lock = threading.Lock()

    def take(self, key: Hashable, group: Hashable) -> tuple[float, bool]:
        """(0.0, False) if a call for `key` of `group` may go ahead now (and counts it);
        otherwise the seconds until one may and whether the group's limit is the one that
        refuses, and nothing is counted."""
        with self._lock:
            mine, theirs = self.inner.wait(key), self.outer.wait(group)
            if mine or theirs:
                return max(mine, theirs), theirs > mine
            self.inner.take(key)
            self.outer.take(group)
            return 0.0, False
