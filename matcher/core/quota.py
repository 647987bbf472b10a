"""Per-member query rate limits and daily quotas, counted in queried records.

A hit/no-hit service is an oracle: a member that may ask without limit can try guessed
identities until it has enumerated a partner's index. So every queried record counts
against two limits the operator sets per project (and optionally per member): records
per minute (a sliding 60-second window) and records per day (a sliding 24-hour window).
A batch of 100 records costs 100. A refused query costs nothing, nor does one the matcher
could not answer (a look-up server down: `refund`).

`QueryMeter` is plain in-memory bookkeeping (per-second buckets for the minute, per-minute
buckets for the day); the matcher seeds it from the query log at start-up so a restart
does not reset anyone's quota.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from blindmatch.matcher.domain import QueryQuota, counted
from blindmatch.matcher.errors import ResourceExhausted


class _Usage:
    def __init__(self) -> None:
        self.seconds: deque[list[int]] = deque()  # [second, records], last 60 s
        self.minutes: deque[list[int]] = deque()  # [minute, records], last 24 h
        # Running sums of the two windows, so a query costs O(1), not O(1440 buckets).
        self.minute_total = 0
        self.day_total = 0

    def _expire(self, now: float) -> None:
        second, minute = int(now), int(now // 60)
        while self.seconds and self.seconds[0][0] <= second - 60:
            self.minute_total -= self.seconds.popleft()[1]
        while self.minutes and self.minutes[0][0] <= minute - 1440:
            self.day_total -= self.minutes.popleft()[1]

    def used(self, now: float) -> tuple[int, int]:
        self._expire(now)
        return self.minute_total, self.day_total

    def add(self, now: float, records: int) -> None:
        second, minute = int(now), int(now // 60)
        if self.seconds and self.seconds[-1][0] == second:
            self.seconds[-1][1] += records
        else:
            self.seconds.append([second, records])
        if self.minutes and self.minutes[-1][0] == minute:
            self.minutes[-1][1] += records
        else:
            self.minutes.append([minute, records])
        self.minute_total += records
        self.day_total += records

    def remove(self, when: float, records: int) -> None:
        """Take back `records` counted at `when` (those of its buckets still held)."""
        second, minute = int(when), int(when // 60)
        for buckets, key in ((self.seconds, second), (self.minutes, minute)):
            for bucket in reversed(buckets):
                if bucket[0] == key:
                    taken = min(records, bucket[1])
                    bucket[1] -= taken
                    if buckets is self.seconds:
                        self.minute_total -= taken
                    else:
                        self.day_total -= taken
                    break
                if bucket[0] < key:
                    break

    def seconds_until_minute_frees(self, now: float, needed: int, limit: int) -> int:
        """How long until `needed` more records fit in the minute window."""
        total = sum(n for _, n in self.seconds)
        for second, n in self.seconds:
            if total + needed <= limit:
                break
            total -= n
            if total + needed <= limit:
                return max(1, second + 60 - int(now))
        return 60

    def minutes_until_day_frees(self, now: float, needed: int, limit: int) -> int:
        """How long until `needed` more records fit in the 24-hour window, in minutes."""
        total = sum(n for _, n in self.minutes)
        for minute, n in self.minutes:
            total -= n
            if total + needed <= limit:
                return max(1, minute + 1440 - int(now // 60))
        return 1440


def said_wait(seconds: float) -> str:
    """A wait said as a person reads one: 40 s, 45 min, 3 h 5 min (rounded up)."""
    if seconds < 120:
        return f"{max(1, math.ceil(seconds))} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


class QueryMeter:
    """Counts each member's queried records and refuses what would exceed its limits."""

    def __init__(self) -> None:
        self._usage: dict[tuple[str, str], _Usage] = {}
        self._lock = threading.Lock()

    def seed(self, project: str, member: str, when: float, records: int) -> None:
        """Count records queried before a restart (from the query log)."""
        with self._lock:
            self._usage.setdefault((project, member), _Usage()).add(when, records)

    def take(self, project: str, member: str, records: int, limits: QueryQuota, now: float) -> None:
        """Count `records` against the member's limits, or raise ResourceExhausted."""
        with self._lock:
            usage = self._usage.setdefault((project, member), _Usage())
            minute, day = usage.used(now)
            for what, limit, per in (("query rate limit", limits.per_minute, "per minute"),
                                     ("query quota", limits.per_day, "per 24 hours")):  # fmt: skip
                if records > limit:  # (never answered, however long it waits)
                    raise ResourceExhausted(
                        f"{what}: {member} may query {counted(limit, 'record')} {per} in project "
                        f"{project!r}, and this query has {records}, more than that: it is "
                        f"refused whenever it is sent; split it into queries of at most "
                        f"{counted(limit, 'record')}, or ask the operator to raise the limit "
                        "(`blindmatch admin query-limits`)"
                    )
            if minute + records > limits.per_minute:
                wait = usage.seconds_until_minute_frees(now, records, limits.per_minute)
                raise ResourceExhausted(
                    f"query rate limit: {member} may query "
                    f"{counted(limits.per_minute, 'record')} per minute in project {project!r} "
                    f"and has queried {minute} in the last minute, so these {records} would "
                    f"exceed it; try again in {wait} s (the operator sets limits with "
                    "`blindmatch admin query-limits`)"
                )
            if day + records > limits.per_day:
                after = said_wait(60 * usage.minutes_until_day_frees(now, records, limits.per_day))
                raise ResourceExhausted(
                    f"query quota: {member} may query {counted(limits.per_day, 'record')} per "
                    f"24 hours in project {project!r} and has queried {day}, so these {records} "
                    f"would exceed it; try again in about {after}, once enough of them "
                    "are 24 hours old, or ask the operator to raise it (`blindmatch admin "
                    "query-limits`)"
                )
            usage.add(now, records)

    def refund(self, project: str, member: str, records: int, when: float) -> None:
        """Give back what `take` counted at `when`: the query was not answered (a look-up
        server down, say), and a query not answered costs nothing."""
        with self._lock:
            usage = self._usage.get((project, member))
            if usage is not None:
                usage.remove(when, records)

    def used(self, project: str, member: str, now: float) -> tuple[int, int]:
        """Records queried in the last minute and the last 24 hours."""
        with self._lock:
            usage = self._usage.get((project, member))
            return usage.used(now) if usage else (0, 0)
