"""S1's and S2's own limit on a two-server project's queries (docs/privacy-design.md
"Queries in a two-server project (2026-12-04)", docs/operations.md "Two servers and a
combiner"), kept apart from the matcher's quota (core/quota.py).

The matcher, as the combiner C, issues the query tickets, so its quota binds only an honest
C: a dishonest one (perhaps with a member's help) could otherwise have S1 and S2 evaluate as
many queries as it liked, each showing it the link bits of fresh pairs against the partners'
standing uploads (probing near-variants of a person). So S1 and S2 each count the records of
every query they take part in, by the query ticket's name (`project/member@tag/tag`,
core/tickets.py), the first time C has it compared with a partner's upload (S1's `Propose`,
S2's `Expand` and `Prepare`), and refuse a query beyond `--query-limit` (records per member
of a project per period) or `--project-query-limit` (records per project, all members) in a
sliding window: RESOURCE_EXHAUSTED naming the limit, which the matcher reports to the member
as a quota refusal. A query's name is counted once (its other partners are free) and
admits one upload of records: records sent again under a name counted are refused.
A watch's records (docs/realtime.md "Watching in a two-server project") are a query's by
name: counted once, at their first comparison with a partner's new upload; each later upload
compared with them is free while that count is in the window (each pair is evaluated once an
upload, so a watch compares its records with an upload no more than one query would), and
counted again at the first comparison after the count has left the window.

`QueryCounter` is plain bookkeeping; the role keeps each counted query on disk with its data
dir (storage/role_store.py), read back at start, so a restart resets nobody's count.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass

from blindmatch.matcher.core.quota import said_wait
from blindmatch.matcher.domain import counted
from blindmatch.matcher.errors import ResourceExhausted

PERIODS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
LIMIT_RE = re.compile(r"([0-9]+)/(minute|hour|day|week)")


@dataclass(frozen=True)
class Limit:
    """`records` query records a `period` (a sliding window of `seconds`)."""

    records: int
    period: str

    @property
    def seconds(self) -> float:
        return PERIODS[self.period]

    def text(self) -> str:
        return f"{self.records}/{self.period}"

    def per(self) -> str:
        """The period with its article: "an hour", "a day" (was "a hour": leftovers)."""
        return f"{'an' if self.period == 'hour' else 'a'} {self.period}"


def parse_limit(text: str) -> Limit:
    """`N/PERIOD` (PERIOD: minute, hour, day or week; N >= 1); ValueError saying why not."""
    m = LIMIT_RE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) < 1:
        raise ValueError(
            f"{text!r}: records per period, N/PERIOD with N at least 1 and PERIOD one of "
            f"{', '.join(PERIODS)} (e.g. 10000/day)"
        )
    return Limit(int(m.group(1)), m.group(2))


# Defaults: the matcher's own default quota per member (domain.DEFAULT_QUOTA, 10,000 records
# a day), so that an honest matcher's members never meet S1's and S2's limit first, and ten
# members' worth a project.
MEMBER_LIMIT = Limit(10_000, "day")
PROJECT_LIMIT = Limit(100_000, "day")


@dataclass(frozen=True)
class QueryLimits:
    """A role's two limits (`two-server role --query-limit/--project-query-limit`)."""

    member: Limit = MEMBER_LIMIT
    project: Limit = PROJECT_LIMIT

    def text(self) -> str:
        return f"{self.member.text()} a member, {self.project.text()} a project"


@dataclass(frozen=True)
class Counted:
    """A query counted: its name at S1 and S2, its project and member, records, when."""

    name: str
    project: str
    member: str
    records: int
    at: float


class QueryCounter:
    """The queries a role took part in, within the longer limit's window; `admit` counts a
    new one or refuses it."""

    def __init__(self, limits: QueryLimits, role: str = "S1") -> None:
        self.limits, self.role = limits, role
        self.window = max(limits.member.seconds, limits.project.seconds)
        self._events: deque[Counted] = deque()  # oldest first
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def restore(self, counted: list[Counted]) -> None:
        """Queries counted before a restart (any order)."""
        with self._lock:
            for c in sorted(counted, key=lambda c: c.at):
                if c.name not in self._names:
                    self._events.append(c)
                    self._names.add(c.name)

    def counted(self, name: str, now: float | None = None) -> bool:
        """Whether `name` is counted (with `now`: still in the window at `now`, so that a
        long-open watch's records are counted again once their count has left it)."""
        with self._lock:
            if now is not None:
                self._expire(now)
            return name in self._names

    def _expire(self, now: float) -> None:
        while self._events and self._events[0].at <= now - self.window:
            self._names.discard(self._events.popleft().name)

    def used(self, project: str, member: str, now: float) -> tuple[int, int]:
        """Records the member, and the whole project, queried in their windows."""
        with self._lock:
            return self._used(project, member, now)

    def _used(self, project: str, member: str, now: float) -> tuple[int, int]:
        self._expire(now)
        mine = sum(c.records for c in self._events if c.project == project
                   and c.member == member and c.at > now - self.limits.member.seconds)  # fmt: skip
        everyone = sum(c.records for c in self._events if c.project == project
                       and c.at > now - self.limits.project.seconds)  # fmt: skip
        return mine, everyone

    def admit(
        self, name: str, project: str, member: str, records: int, now: float
    ) -> Counted | None:
        """Count query `name` (`records` records of `member` of `project`) at `now`: the
        new entry (to keep and audit), or None if it was counted already; ResourceExhausted
        naming the limit if it would go beyond one."""
        with self._lock:
            if name in self._names:
                return None
            mine, everyone = self._used(project, member, now)
            for limit, used, who in (
                (self.limits.member, mine, f"{member} of project {project!r}"),
                (self.limits.project, everyone, f"project {project!r} (all its members)"),
            ):
                flag = (
                    f"`--{'project-' if who.startswith('project') else ''}query-limit "
                    f"{limit.text()}`"
                )
                if records > limit.records:  # (never evaluated, however long it waits)
                    raise ResourceExhausted(
                        f"query limit: {self.role} evaluates at most "
                        f"{counted(limit.records, 'query record')} {limit.per()} for {who} "
                        f"(its {flag}), and this query has "
                        f"{records}, more than that: it is refused whenever it is sent; split "
                        f"it into queries of at most {counted(limit.records, 'record')}, or ask "
                        "S1's and "
                        "S2's operators to raise the limit"
                    )
                if used + records > limit.records:
                    whose = None if who.startswith("project") else member
                    wait = self._wait(project, whose, limit, used + records, now)
                    raise ResourceExhausted(
                        f"query limit: {self.role} evaluates at most "
                        f"{counted(limit.records, 'query record')} {limit.per()} for {who} "
                        f"(its {flag}), {used} in the "
                        f"last {limit.period}, so "
                        f"{records} more would exceed it; this is {self.role}'s own limit, beside "
                        f"the matcher's quota: try again in about {said_wait(wait)}, once enough "
                        "of them have left the window, or ask S1's and S2's operators"
                    )
            c = Counted(name, project, member, records, now)
            self._events.append(c)
            self._names.add(name)
            return c

    def _wait(
        self, project: str, member: str | None, limit: Limit, total: int, now: float
    ) -> float:
        """Seconds until `total` (the records used and asked) falls to the limit, as the
        project's (or, `member`, the member's) counted queries leave its window."""
        for c in self._events:  # oldest first
            if c.project == project and member in (None, c.member) and c.at > now - limit.seconds:
                total -= c.records
                if total <= limit.records:
                    return c.at + limit.seconds - now
        return limit.seconds


__all__ = [
    "MEMBER_LIMIT",
    "PROJECT_LIMIT",
    "Counted",
    "Limit",
    "QueryCounter",
    "QueryLimits",
    "parse_limit",
]
