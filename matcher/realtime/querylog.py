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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import NOTIFY, QUERY, WATCH, QueryRecord
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
    cost the query path a lock and a write each, at thousands a second)."""
    who = f"{record.member} (user {record.user})" if record.user else record.member
    if record.refused:
        log.warning(
            "%s refused: %s/%s, %d record(s), purpose %r: %s",
            record.kind,
            record.project,
            who,
            record.records,
            record.purpose,
            record.refused,
        )
        return
    if not log.isEnabledFor(logging.DEBUG):
        return
    log.debug(
        "%s: %s/%s, %d record(s), purpose %r, disclosed %s",
        record.kind,
        record.project,
        who,
        record.records,
        record.purpose,
        ", ".join(f"{p} ({lvl})" for p, lvl in sorted(record.disclosed.items())) or "nothing",
    )


# The volume log's batches: entries gathered for at most this long, or this many.
BATCH_WINDOW = 0.05
BATCH_MAX = 2000

NOT_AUDITED = (
    "the matcher's disk is full, so it cannot record this request in its audit log; "
    "nothing was answered or disclosed; ask the operator to free space, then ask again"
)


class QueryLog:
    """Audits each query before it is answered (group-committed, through `audit_sink`),
    then writes its volume entry off the request path, in batches (the writer is woken for
    the first entry of a batch, not for every one)."""

    def __init__(
        self, store: IndexStore, audit_sink: Callable[[Sequence[audit.Event]], None] | None = None
    ) -> None:
        self._store = store
        self._audit_sink = audit_sink
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
        if self._audit_sink is not None:
            try:
                self._audit_sink([audit_event(r) for r in records])
            except ResourceExhausted as exc:
                log.error("%d request(s) not answered: %s", len(records), exc)
                raise ResourceExhausted(NOT_AUDITED) from exc
        for record in records:
            _log(record)
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
