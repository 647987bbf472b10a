"""Refused requests (a bad token, bad input): logged, rate-limited, and counted.

Every call the matcher refuses with one of `COUNTED` passes through `Refusals.note`:

- the server log gets one WARNING line (the RPC, the caller as far as it is known, with
  the named user whose token it used, if any, the peer's address, the status and the
  message sent back; never a token, which no message carries; each string the client
  supplied, the project it named above all, cut to `MAX_LOGGED_BYTES`), at most `LOG_BURST` lines
  a minute: past that, one line says the rest of the minute is counted, not logged, and
  the next minute's first line says how many were not logged. A flood of bad tokens
  cannot fill the disk through the log;
- the counts go to the query volume log (index.sqlite), one row per project, caller and
  status (and named user) every `FLUSH_SECONDS` at most (not a row per refusal, so a flood
  cannot fill the database either), where `admin query-report` shows them: a member's
  refused requests on its own row (its users' shares named), a token nobody holds (naming
  the project) on the row `UNKNOWN_CALLER`.
  Counts for a project that does not exist are dropped when they are written, and so are
  those of a client stream refused at the door: its project is in its first message, which
  is not read for a caller that did not authenticate (only logged, and counted per address).

- the calls refused for their token at the door (none, or one nobody holds) are counted per
  client address too (`Strangers`): past `serve --max-auth-failures` in a minute, that
  address's calls are refused unread, without a token look-up, unless their token
  authenticated recently (`Refusals.at_door`, from the authenticating interceptor).

Busy and quota refusals (RESOURCE_EXHAUSTED) and the right request at the wrong moment
(FAILED_PRECONDITION, ALREADY_EXISTS) are not refusals of this kind: quotas have their own
log (realtime/querylog.py), and so do queries the matcher could not answer (UNAVAILABLE).
Except a query or watch refused FAILED_PRECONDITION (`QUERY_METHODS`): CLKs of another
length, schema or secret than the project's, or a watch where watching is not allowed, is
bad input, counted here, so that every query refused after its token was checked is on
the operator's report (docs/realtime.md, "Which refused queries are audited"). In two-server
mode a query or watch refused (or a watch ended) by S1's caps, or because S1 and S2 no longer
hold its records (one restarted), is counted under a label of its own in place of the status
(`OVER_S1_CAPS`, `RECORDS_LOST`, and their watches'), not as the member's bad input.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from blindmatch.matcher.domain import (
    AUTH_FAILURES_PER_MINUTE,
    OVER_S1_CAPS,
    RECORDS_LOST,
    RECORDS_NOT_HELD,
    REFUSED_REQUEST,
    S1_REFUSES_KEYS,
    WATCH_NOT_ALLOWED,
    WATCH_OVER_S1_CAPS,
    WATCH_RECORDS_LOST,
    WATCH_RECORDS_NOT_HELD,
    WATCHING_OFF,
    QueryRecord,
    counted,
    valid_name,
)
from blindmatch.matcher.errors import Unauthenticated
from blindmatch.matcher.rpc.status import MAX_LOGGED_BYTES, bounded
from blindmatch.protos.wire import BAND_KEYS_NEEDED

T = TypeVar("T")

log = logging.getLogger("blindmatch.matcher")

COUNTED = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE"}
)
# A query or watch refused FAILED_PRECONDITION is bad input too (CLKs of another length,
# schema or secret than the project's; a watch where watching is not allowed): counted.
QUERY_METHODS = frozenset({"Query", "QueryStream", "Watch"})
LOG_BURST = 20  # log lines a minute
LOG_WINDOW = 60.0
FLUSH_SECONDS = 10.0
MAX_KEYS = 10_000  # (project, caller, user, status) counts held between two writes
UNKNOWN_CALLER = "(no valid token)"


class Refusals:
    """Notes refused requests; `sink` writes counted ones (QueryRecords of kind
    `REFUSED_REQUEST`, `records` = how many), `known` says whether a project exists."""

    def __init__(
        self,
        sink: Callable[[Sequence[QueryRecord]], None] | None = None,
        known: Callable[[str], bool] = lambda _: True,
        clock: Callable[[], float] = time.time,
        max_auth_failures: int = AUTH_FAILURES_PER_MINUTE,
    ) -> None:
        self.strangers = Strangers(max_auth_failures)
        self._sink = sink
        self._known = known
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str, str]] = Counter()
        self._window = clock()
        self._logged = self._unlogged = 0
        self._flushed = clock()

    def at_door(self, peer: str, digest: bytes, look_up: Callable[[], T]) -> T:
        """`look_up()` (who a call's token makes it, raising `Unauthenticated` for nobody),
        unless `peer`'s address is over its refusals and the token (whose hash is `digest`)
        did not authenticate recently: then refused unread. A refusal counts against the
        address; a success remembers the token."""
        address = peer.rsplit(":", 1)[0]  # ipv4:10.0.0.9:port, ipv6:[::1]:port
        self.strangers.admit(address, digest)
        try:
            found = look_up()
        except Unauthenticated:
            self.strangers.refused(address)
            raise
        self.strangers.good(digest)
        return found

    def note(
        self,
        *,
        method: str,
        status: str,
        message: str,
        project: str,
        member: str,
        peer: str,
        user: str = "",
    ) -> None:
        """Log and count one refused call of `member` (empty: no valid token), by its named
        `user`'s token if `user` (the name is logged, never the token)."""
        rpc = method.rsplit("/", 1)[-1]
        if status not in COUNTED and not (status == "FAILED_PRECONDITION" and rpc in QUERY_METHODS):
            return
        if BAND_KEYS_NEEDED in message:  # a query sent without band keys, sent again with them
            return
        if rpc == "Watch" and status == "FAILED_PRECONDITION" and WATCHING_OFF in message:
            status = WATCH_NOT_ALLOWED  # counted as what it is (core/volume.py)
        elif status == "FAILED_PRECONDITION" and S1_REFUSES_KEYS in message:
            # S1's refusal, not the member's bad input (core/volume.py); a watch's, its end
            status = WATCH_OVER_S1_CAPS if rpc == "Watch" else OVER_S1_CAPS
        elif status == "FAILED_PRECONDITION" and message.startswith(RECORDS_NOT_HELD):
            status = RECORDS_LOST  # S1 or S2 restarted since they were sent: nobody's input
        elif status == "FAILED_PRECONDITION" and message.startswith(WATCH_RECORDS_NOT_HELD):
            status = WATCH_RECORDS_LOST  # (a watch ended for the same)
        # What the client sent (the project named, the message quoting its fields) is cut
        # for the log, each string to MAX_LOGGED_BYTES, saying so (`shown`).
        who = f"{shown(project or '?')}/{shown(member)}" if member else UNKNOWN_CALLER
        if member and user:
            who += f" (user {shown(user)})"
        now = self._clock()
        with self._lock:
            key = (project, member or UNKNOWN_CALLER, user if member else "", status)
            # (a name no project can have is not counted: its count would be dropped anyway)
            counted = project and valid_name(project)
            if counted and (key in self._counts or len(self._counts) < MAX_KEYS):
                self._counts[key] += 1
            unlogged = 0
            if now - self._window >= LOG_WINDOW:
                unlogged, self._unlogged = self._unlogged, 0
                self._window, self._logged = now, 0
            self._logged += 1
            burst_ends = self._logged == LOG_BURST + 1
            logs = self._logged <= LOG_BURST
            if not logs:
                self._unlogged += 1
            due = now - self._flushed >= FLUSH_SECONDS
        if unlogged:
            log.warning("%d more refused requests in the last minute were not logged", unlogged)
        if logs:
            log.warning(
                "refused %s from %s at %s: %s %s",
                rpc,
                who,
                shown(peer),
                status,
                shown(message),
            )
        elif burst_ends:
            log.warning(
                "over %d refused requests this minute: the rest are counted, not logged",
                LOG_BURST,
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the counts gathered since the last write (for projects that exist)."""
        now = self._clock()
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._flushed = now
        if self._sink is None or not counts:
            return
        known = {p for p in {p for p, _, _, _ in counts} if self._known(p)}
        records = [
            QueryRecord(now, project, member, REFUSED_REQUEST, "", n, refused=status, user=user)
            for (project, member, user, status), n in sorted(counts.items())
            if project in known
        ]
        if records:
            try:
                self._sink(records)
            except Exception:  # a full disk, say: the counts are lost, the log has the lines
                log.exception("could not record %d refused requests", sum(counts.values()))


def shown(text: str) -> str:
    """A client-supplied string as a log line quotes it: cut to MAX_LOGGED_BYTES, saying so."""
    return bounded(text, MAX_LOGGED_BYTES)


# -- strangers ----------------------------------------------------------------------------------


class Strangers:
    """Refused authentications per client address: past `per_minute` in the last minute,
    that address's calls are refused at once, without looking their token up, unless the
    token authenticated recently (a member behind the same address goes on working)."""

    WINDOW = 60.0
    REMEMBERED = 10_000  # tokens (hashes) that authenticated recently, at most

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("strangers: at least one refusal a minute")
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: dict[str, list[float]] = {}
        self._good: dict[bytes, float] = {}

    def admit(self, address: str, digest: bytes) -> None:
        """Raise `Unauthenticated` if `address` is over its refusals and `digest` (a token's
        hash) did not authenticate recently."""
        now = self._clock()
        with self._lock:
            refusals = sum(1 for t in self._refused.get(address, ()) if now - t < self.WINDOW)
            if refusals < self.per_minute or now - self._good.get(digest, -1e18) < self.WINDOW:
                return
        were, their = ("was", "its") if refusals == 1 else ("were", "their")
        raise Unauthenticated(
            f"{counted(refusals, 'call')} from this address {were} refused for {their} token in "
            "the last minute (the matcher's limit, serve --max-auth-failures); this one is "
            "refused unread: wait a minute and check the token"
        )

    def refused(self, address: str) -> None:
        """Count a call from `address` refused for its token."""
        now = self._clock()
        with self._lock:
            if len(self._refused) > self.REMEMBERED:  # forget addresses gone quiet
                for quiet in [a for a, ts in self._refused.items() if now - ts[-1] >= self.WINDOW]:
                    del self._refused[quiet]
            times = [t for t in self._refused.get(address, ()) if now - t < self.WINDOW]
            self._refused[address] = [*times, now]

    def good(self, digest: bytes) -> None:
        """Remember that the token with hash `digest` authenticated now."""
        now = self._clock()
        with self._lock:
            self._good[digest] = now
            if len(self._good) > self.REMEMBERED:
                for old in sorted(self._good, key=self._good.__getitem__)[: self.REMEMBERED // 2]:
                    del self._good[old]
