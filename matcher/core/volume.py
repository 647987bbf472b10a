"""The query volume report: who queried how much, and which volumes look like probing.

A hit/no-hit service is an oracle; quotas bound how fast a member can ask, and this report
shows the operator what each member asked within them (`blindmatch admin query-report`).
Pure: it reads query log entries, nothing else.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blindmatch.matcher.domain import (
    DEFAULT_QUOTA,
    OVER_S1_CAPS,
    RECORDS_LOST,
    REFUSED_REQUEST,
    UNANSWERED,
    WATCH_NOT_ALLOWED,
    WATCH_OVER_S1_CAPS,
    WATCH_RECORDS_LOST,
    QueryQuota,
    QueryRecord,
    counted,
)


@dataclass(frozen=True)
class UserVolume:
    """A named user's share of its member's volume (the rest is the member's own token's)."""

    user: str
    queries: int
    records: int
    records_with_hits: int
    refused: int  # queries refused for exceeding limits
    bad_requests: int  # requests refused for a bad token or bad input
    unanswered: int = 0  # queries the matcher could not answer (UNAVAILABLE), as the row's


@dataclass(frozen=True)
class QueryVolume:
    """One member's query volume over a window, and why it looks unusual (if it does)."""

    member: str
    queries: int
    records: int
    records_with_hits: int
    peak_per_minute: int
    per_day_limit: int  # 0: none applies (the row of callers with no valid token)
    distinct_purposes: int
    refused: int
    flags: tuple[str, ...]
    users: tuple[UserVolume, ...] = ()  # each named user who asked or was refused
    # Queries the matcher could not answer (UNAVAILABLE: a look-up server down or being
    # loaded): audited, not counted against the quota, not the member's doing (no flag).
    unanswered: int = 0


# A member is flagged when its volume is this many times the median of its project's
# members (and at least MIN_FLAGGED records), when it used this share of its daily quota,
# or when many records yield almost no hits (the signature of enumeration).
VOLUME_FACTOR = 3.0
MIN_FLAGGED = 50
QUOTA_SHARE = 0.8
PROBE_RECORDS = 100
PROBE_HIT_RATE = 0.01


def volume_report(
    entries: Sequence[QueryRecord],
    members: Sequence[str],
    limits: Mapping[str, QueryQuota],
    hours: int,
) -> list[QueryVolume]:
    """Per-member query volume over the window `entries` cover, unusual volume flagged;
    requests refused for a bad token or bad input (`REFUSED_REQUEST` entries) are flagged
    on the caller's row (a token nobody holds has a row of its own). Queries the matcher
    could not answer (refused `UNANSWERED`) are counted apart, in `unanswered`, and not
    flagged. Watches refused where watching is not allowed (`WATCH_NOT_ALLOWED`) are
    flagged as such, not as bad input (a user's share named in the flag alone), as are
    queries S1 refused over its caps, taking no band keys (`OVER_S1_CAPS`), and the other
    two-server refusals not of the member's doing (`APART`: watches S1's caps ended, queries
    and watches whose records S1 and S2 no longer held). Each
    named user's share of its member's row is in `users`, its unanswered
    queries included."""
    by_member: dict[str, list[QueryRecord]] = {m: [] for m in members}
    bad: dict[str, Counter[str]] = {}
    bad_users: dict[str, Counter[str]] = {}
    unanswered: Counter[str] = Counter()
    off: dict[str, Counter[str]] = {}  # watches refused, not allowed: by user ("" none)
    apart: dict[str, dict[str, Counter[str]]] = {}  # `APART`'s, by label then user
    unanswered_users: dict[str, Counter[str]] = {}
    for e in entries:
        if e.refused.startswith(UNANSWERED):
            unanswered[e.member] += 1
            if e.user:
                unanswered_users.setdefault(e.member, Counter())[e.user] += 1
            by_member.setdefault(e.member, [])
        elif e.kind == REFUSED_REQUEST and e.refused == WATCH_NOT_ALLOWED:
            off.setdefault(e.member, Counter())[e.user] += e.records
            by_member.setdefault(e.member, [])
        elif e.kind == REFUSED_REQUEST and e.refused in APART:
            apart.setdefault(e.member, {}).setdefault(e.refused, Counter())[e.user] += e.records
            by_member.setdefault(e.member, [])
        elif e.kind == REFUSED_REQUEST:
            bad.setdefault(e.member, Counter())[e.refused] += e.records
            if e.user:
                bad_users.setdefault(e.member, Counter())[e.user] += e.records
            by_member.setdefault(e.member, [])
        else:
            by_member.setdefault(e.member, []).append(e)
    records = {m: sum(e.records for e in es if not e.refused) for m, es in by_member.items()}
    median = statistics.median(records.values()) if records else 0
    window_days = max(hours / 24.0, 1e-9)
    report = []
    for member, es in sorted(by_member.items()):
        answered = [e for e in es if not e.refused]
        per_minute: dict[int, int] = {}
        for e in answered:
            per_minute[int(e.time // 60)] = per_minute.get(int(e.time // 60), 0) + e.records
        n = records[member]
        hits = sum(e.records_with_hits for e in answered)
        # (a row of no member's, the callers with no valid token, has no quota: limit 0)
        limit = limits.get(member, DEFAULT_QUOTA) if member in members else None
        flags = []
        others = [records[m] for m in records if m != member]
        baseline = statistics.median(others) if others else median
        if n >= MIN_FLAGGED and n > VOLUME_FACTOR * baseline:
            flags.append(
                f"{counted(n, 'record')} queried, over {VOLUME_FACTOR:g}x the other members' "
                f"median ({baseline:g})"
            )
        if limit is not None and n >= QUOTA_SHARE * limit.per_day * window_days:
            flags.append(f"used {n / (limit.per_day * window_days):.0%} of its quota")
        if n >= PROBE_RECORDS and hits <= PROBE_HIT_RATE * n:
            flags.append(f"{hits} of {n} queried records hit: looks like probing")
        refused = len(es) - len(answered)
        if refused:
            flags.append(f"{counted(refused, 'query', 'queries')} refused for exceeding limits")
        if member in bad:
            statuses = ", ".join(f"{s} {n}" for s, n in sorted(bad[member].items()))
            users = bad_users.get(member, Counter())
            by = "; by user " + ", ".join(f"{u} {n}" for u, n in sorted(users.items()))
            flags.append(
                f"{counted(sum(bad[member].values()), 'request')} refused for a bad token or bad "
                f"input ({statuses}{by if users else ''})"
            )
        if member in off:
            flags.append(_watches_refused(off[member]))
        mine = apart.get(member, {})
        flags.extend(_refused_apart(label, mine[label]) for label in APART if label in mine)
        report.append(
            QueryVolume(
                users=_users(
                    es, bad_users.get(member, Counter()), unanswered_users.get(member, Counter())
                ),
                member=member,
                queries=len(answered),
                records=n,
                records_with_hits=hits,
                peak_per_minute=max(per_minute.values(), default=0),
                per_day_limit=limit.per_day if limit is not None else 0,
                distinct_purposes=len({e.purpose for e in answered}),
                refused=refused,
                flags=tuple(flags),
                unanswered=unanswered[member],
            )
        )
    return report


def _watches_refused(by_user: Counter[str]) -> str:
    users = ", ".join(f"{u} {n}" for u, n in sorted(by_user.items()) if u)
    return (
        f"{counted(sum(by_user.values()), 'watch', 'watches')} refused: watching is not allowed "
        "in this project "
        f"(`admin query-limits --allow-watch`){'; by user ' + users if users else ''}"
    )


_S1_CAPS = (
    "over its caps, taking no band keys (its --query-band-keys refuse: S1's operator's "
    "setting, not the member's input)"
)
_LOST = "the records were no longer at S1 and S2"
# Two-server refusals not of the member's doing, each flagged apart (not as bad input) on the
# member's row: what is refused, counted (one, many), then why.
APART = {
    OVER_S1_CAPS: ("query", "queries", f"refused by S1 {_S1_CAPS}"),
    WATCH_OVER_S1_CAPS: ("watch", "watches", f"ended by S1 {_S1_CAPS}"),
    RECORDS_LOST: (
        "query",
        "queries",
        f"refused: {_LOST} when searched (S1 or S2 restarted since they were sent?): not "
        "the member's doing, no quota used",
    ),
    WATCH_RECORDS_LOST: (
        "watch",
        "watches",
        f"ended: {_LOST} at a partner's upload (S1 or S2 restarted since the opening?): "
        "not the member's doing",
    ),
}


def _refused_apart(label: str, by_user: Counter[str]) -> str:
    one, many, why = APART[label]
    users = ", ".join(f"{u} {n}" for u, n in sorted(by_user.items()) if u)
    return (
        f"{counted(sum(by_user.values()), one, many)} {why}{'; by user ' + users if users else ''}"
    )


def _users(
    entries: Sequence[QueryRecord], bad: Counter[str], unanswered: Counter[str]
) -> tuple[UserVolume, ...]:
    """Each named user's share of one member's queries (`entries`), bad requests and
    queries not answered."""
    names = sorted({e.user for e in entries if e.user} | set(bad) | set(unanswered))
    shares = []
    for name in names:
        mine = [e for e in entries if e.user == name]
        answered = [e for e in mine if not e.refused]
        shares.append(
            UserVolume(
                user=name,
                queries=len(answered),
                records=sum(e.records for e in answered),
                records_with_hits=sum(e.records_with_hits for e in answered),
                refused=len(mine) - len(answered),
                bad_requests=bad[name],
                unanswered=unanswered[name],
            )
        )
    return tuple(shares)
