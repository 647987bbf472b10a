"""The query log: every query, watch and notification, answered or refused, recorded.

`QueryLog.record` (and `record_all`, for the notifications one index change sets off) is
the one place they all pass through. Each record goes to three places:

- the audit log (who asked, why, and which partners' information was disclosed at which
  level; never a CLK), durably, before `record` returns: a group commit
  (`AuditLog.append_all`), so the queries that arrive together share one transaction and
  one fsync, and a lone query waits for no window. If the entry cannot be written (a full
  disk) `record` raises and the caller answers nothing: no disclosure without its entry;
- the server log (refusals at WARNING);
- the query volume log in index.sqlite (counts and purposes, for quotas across restarts
  and `admin query-report`), off the request path: a writer thread gathers what arrives
  within `BATCH_WINDOW` into one transaction. A crash can lose that window of volume
  entries (quotas then count a little less), never an audit entry.

Queries the matcher could not answer (refused `UNAVAILABLE`: a look-up server down or being
loaded) go through `record_unanswered`. A client retrying through an outage would otherwise
cost an fsynced audit entry an attempt, so they are audited one entry per outage window
(`OUTAGE_WINDOW`) of a member's user and purpose: the first refusal at once, as any other;
the window's later ones counted, and audited as one `query.refused` entry (`detail.count`,
`first`, `last`, `records`) when the window ends — at the first query of that user and
purpose answered after it, at the first refusal after `OUTAGE_WINDOW`, whenever a record
finds it expired, or when the matcher stops. Every refusal still has its own volume entry,
so `unanswered` in `admin query-report` counts each. A crash loses from the audit log only
the count of an open window (its first refusal is there); the volume log has each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import NOTIFY, QUERY, WATCH, QueryRecord, counted
from blindmatch.matcher.errors import ResourceExhausted
from blindmatch.matcher.storage.index_store import IndexStore

log = logging.getLogger("blindmatch.matcher.realtime")


def audit_event(record: QueryRecord) -> audit.Event:
    """The audit log's view of a query, watch or notification (never its CLKs)."""
    action = {QUERY: "query", WATCH: "watch", NOTIFY: "watch.notify"}[record.kind]
    detail: dict[str, object] = {"records": record.records}
    if record.refused:
        action = "query.refused"
        detail.update(kind=record.kind, refused=record.refused)
    else:
        detail["records_with_hits"] = record.records_with_hits
    return audit.Event(
        record.member,
        action,
        record.project,
        record.member,
        purpose=record.purpose,
        disclosed=dict(record.disclosed),
        detail=detail,
        user=record.user,
    )


def _log(record: QueryRecord) -> None:
    """The server log's line: refusals at WARNING, answered queries at DEBUG (the query
    log and the audit log hold every one, and a line per query on the server log would
    cost the query path a lock and a write each, at thousands a second). Neither holds the
    purpose: a case reference (or a custody and collar number) that the audit entry and the
    query log keep, the query log's blanked when the member erases (usecases/erasure.py); a
    server log goes to the operator's log collection, under its own retention (govwalk)."""
    who = f"{record.member} (user {record.user})" if record.user else record.member
    if record.refused:
        log.warning(
            "%s refused: %s/%s, %s: %s",
            record.kind,
            record.project,
            who,
            counted(record.records, "record"),
            record.refused,
        )
        return
    if not log.isEnabledFor(logging.DEBUG):
        return
    log.debug(
        "%s: %s/%s, %s, disclosed %s",
        record.kind,
        record.project,
        who,
        counted(record.records, "record"),
        ", ".join(f"{p} ({lvl})" for p, lvl in sorted(record.disclosed.items())) or "nothing",
    )


# The volume log's batches: entries gathered for at most this long, or this many.
BATCH_WINDOW = 0.05
BATCH_MAX = 2000

NOT_AUDITED = (
    "the matcher's disk is full, so it cannot record this request in its audit log; "
    "nothing was answered or disclosed; ask the operator to free space, then ask again"
)


# Refusals UNAVAILABLE of one member's user and purpose within this many seconds of the
# window's first are audited as one entry (the module docstring).
OUTAGE_WINDOW = 60.0


@dataclass
class _Outage:
    """One open outage window: when it opened (monotonic), and the refusals since its
    first (audited at once), not audited yet."""

    opened: float
    kind: str = QUERY
    count: int = 0
    records: int = 0
    first: float = 0.0  # QueryRecord.time of the first not audited yet
    last: float = 0.0
    refused: str = ""

    def add(self, record: QueryRecord) -> None:
        if not self.count:
            self.first = record.time
        self.count += 1
        self.records += record.records
        self.last = record.time
        self.kind = record.kind
        self.refused = record.refused


_OutageKey = tuple[str, str, str, str]  # project, member, user, purpose


def _outage_event(key: _OutageKey, outage: _Outage) -> audit.Event:
    """The one audit entry for a window's refusals after its first."""
    project, member, user, purpose = key
    return audit.Event(
        member,
        "query.refused",
        project,
        member,
        purpose=purpose,
        detail={
            "kind": outage.kind,
            "records": outage.records,
            "refused": outage.refused,
            "count": outage.count,
            "first": outage.first,
            "last": outage.last,
        },
        user=user,
    )


class QueryLog:
    """Audits each query before it is answered (group-committed, through `audit_sink`),
    then writes its volume entry off the request path, in batches (the writer is woken for
    the first entry of a batch, not for every one)."""

    def __init__(
        self,
        store: IndexStore,
        audit_sink: Callable[[Sequence[audit.Event]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._audit_sink = audit_sink
        self._clock = clock
        self._outages: dict[_OutageKey, _Outage] = {}
        self._outage_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[QueryRecord] = []
        self._added = self._written = 0
        self._hurry = self._closing = False
        self._thread = threading.Thread(target=self._loop, name="blindmatch-qlog", daemon=True)
        self._thread.start()

    def record(self, record: QueryRecord) -> None:
        """Record one query, watch or notification, answered or refused (see the module
        docstring). Returns once its audit entry is durable; `ResourceExhausted` (or what
        else stopped the write) if it is not, and then nothing may be answered."""
        self.record_all((record,))

    def record_all(self, records: Sequence[QueryRecord]) -> None:
        """`record` for several at once (one audit write)."""
        ended = self._ended(records) if self._outages else []
        self._commit([*ended, *(audit_event(r) for r in records)], records)

    def record_unanswered(self, record: QueryRecord) -> None:
        """Record a query refused `UNAVAILABLE`: audited at once if it opens an outage
        window, else counted for the window's one entry (the module docstring); its volume
        entry either way."""
        key = (record.project, record.member, record.user, record.purpose)
        now = self._clock()
        with self._outage_lock:
            outage = self._outages.get(key)
            if outage is not None and now - outage.opened < OUTAGE_WINDOW:
                outage.add(record)
                ended = None
            else:
                ended = self._outages.pop(key, None)
                self._outages[key] = _Outage(now)
        if outage is not None and ended is None:  # counted, audited with its window
            log.debug("%s refused again within its outage window: %s", record.member,
                      record.refused)  # fmt: skip
            self._volume([record])
            return
        events = [_outage_event(key, ended)] if ended is not None and ended.count else []
        self._commit([*events, audit_event(record)], [record])

    def _ended(self, records: Sequence[QueryRecord]) -> list[audit.Event]:
        """The entries of the outage windows these answered records, or the clock, end."""
        now = self._clock()
        answered = {(r.project, r.member, r.user, r.purpose) for r in records if not r.refused}
        events = []
        with self._outage_lock:
            for key in list(self._outages):
                outage = self._outages[key]
                if key in answered or now - outage.opened >= OUTAGE_WINDOW:
                    del self._outages[key]
                    if outage.count:
                        events.append(_outage_event(key, outage))
        for event in events:
            log.warning("%s: %d more quer(ies) refused UNAVAILABLE in an outage window, "
                        "audited as one entry: %s", event.member, event.detail["count"],
                        event.detail["refused"])  # fmt: skip
        return events

    def end_outages(self) -> None:
        """Audit every open outage window's count now (the matcher stopping)."""
        with self._outage_lock:
            open_ = list(self._outages.items())
            self._outages.clear()
        events = [_outage_event(k, o) for k, o in open_ if o.count]
        if events and self._audit_sink is not None:
            try:
                self._audit_sink(events)
            except Exception:  # stopping: say so, and stop
                log.exception("could not audit %d outage windows' refusals", len(events))

    def _commit(self, events: list[audit.Event], records: Sequence[QueryRecord]) -> None:
        if self._audit_sink is not None:
            try:
                self._audit_sink(events)
            except ResourceExhausted as exc:
                log.error("%s not answered: %s", counted(len(records), "request"), exc)
                raise ResourceExhausted(NOT_AUDITED) from exc
        for record in records:
            _log(record)
        self._volume(records)

    def _volume(self, records: Sequence[QueryRecord]) -> None:
        with self._cond:
            self._pending.extend(records)
            self._added += len(records)
            if len(self._pending) == len(records) or len(self._pending) >= BATCH_MAX:
                self._cond.notify_all()

    def flush(self) -> None:
        """Block until everything added so far is written."""
        with self._cond:
            target = self._added
            self._hurry = True
            self._cond.notify_all()
            while self._written < target and self._thread.is_alive():
                self._cond.wait(0.5)

    def close(self) -> None:
        self.end_outages()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _next_batch(self) -> tuple[list[QueryRecord], bool]:
        """Wait for entries, then for the window to close; (the batch, closing)."""
        with self._cond:
            while not self._pending and not self._closing and not self._hurry:
                self._cond.wait()
            until = time.monotonic() + BATCH_WINDOW
            while not (self._closing or self._hurry or len(self._pending) >= BATCH_MAX):
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending, []
            self._hurry = False
            return batch, self._closing

    def _loop(self) -> None:
        while True:
            batch, closing = self._next_batch()
            try:
                if batch:
                    self._store.log_queries(batch)
            except Exception:  # the log must not take the matcher down
                log.exception("could not write %d query log entries", len(batch))
            finally:
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
            if closing and not batch:
                return
