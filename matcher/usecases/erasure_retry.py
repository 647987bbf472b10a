"""An erasure that failed part-way while the matcher runs, finished in the background.

An erasure's transaction (its rows, its `erase` entry, its intent) either commits or not;
what comes after can fail with the matcher still up: its upload files not unlinked or a
database not checkpointed (a full disk), its standing index not deleted from `index.sqlite`
(the same), S1 or S2 not reached to forget the member's shares (one down), a look-up server
not told (it keeps the member's shards in memory until it reads its shards again; no query is
answered until then: rpc/lookup_client.py). Such an erasure keeps its intent, its Erase reply
says what is pending, and `ErasureRetries` tries the rest again on a thread of its own after
RETRY_WAITS (1, 2, 5, 10, 30 s, then every minute, as realtime/twoforget.py's; `waits`,
server.py `create_server`'s `retry_waits`: tests pass shorter ones), logged at
WARNING the first time and every WARN_EVERY attempts, until it is done: then an
`erase.complete` entry says what was left, and the intent goes. A matcher stopped meanwhile
leaves the intent to its next start (`complete_cut_short`), and a member that erases again
completes it too (its later erasure's `erasure_done`: the retry then finds no intent, and
stops).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from blindmatch.matcher.domain import TWO_SERVER, counted
from blindmatch.matcher.errors import NotFound
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.realtime.twoforget import RETRY_WAITS, SERVERS, WARN_EVERY
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import TwoServerSetup

log = logging.getLogger("blindmatch.matcher")

RETRIED = (
    "part of this erasure failed while the matcher was running (its upload files, its "
    "standing index, a look-up server, or S1's or S2's Forget); the matcher tried again in "
    "the background until it was done"
)


def forget_queries(store: Store, realtime: Realtime, project: str, member: str, seq: int) -> int:
    """The purposes and named users of the member's queries logged until its erasure (the
    `erase` entry `seq`) blanked in the query log (storage/index_store.py `forget_queries`),
    once the queries answered before it are written. How many."""
    realtime.query_log.flush()
    return realtime.index_store.forget_queries(project, member, store.erased_at(seq))


@dataclass
class _Pending:
    seq: int  # the erasure's `erase` entry (and intent)
    project: str
    member: str
    servers: set[str]  # S1, S2: not yet known to have forgotten the member's shares
    due: float
    attempts: int = 0
    index_records: int = 0  # what the attempts found left of its standing index
    why: str = RETRIED  # its `erase.complete` entry's
    dropped: dict[str, str] = field(default_factory=dict)  # server -> its answer


class ErasureRetries:
    """The erasures the matcher is finishing in the background: `add`, then `close`."""

    def __init__(
        self,
        store: Store,
        realtime: Realtime,
        two_server: TwoServerSetup | None,
        waits: tuple[float, ...] = RETRY_WAITS,
    ) -> None:
        self.store, self.realtime, self.two_server, self.waits = store, realtime, two_server, waits
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        seq: int,
        project: str,
        member: str,
        servers: set[str] | None = None,
        index_records: int = 0,
        why: str = RETRIED,
    ) -> None:
        """Finish the erasure logged as `seq` in the background: its files and index, and
        S1's and S2's Forget (`servers`: those still to be asked; None: both, if the project
        is a two-server one). `index_records`: what was found left of its index already;
        `why`: its `erase.complete` entry's."""
        if servers is None:
            servers = set(SERVERS) if self._two_server(project) else set()
        with self._lock:
            due = time.monotonic() + self.waits[0]
            self._pending[seq] = _Pending(seq, project, member, set(servers), due,
                                          index_records=index_records, why=why)  # fmt: skip
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="bm-erasure-retry")  # fmt: skip
                self._thread.start()
        self._wake.set()

    @property
    def pending(self) -> list[int]:
        """The erasures (their `erase` entries' seqs) not finished yet."""
        with self._lock:
            return sorted(self._pending)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5.0)

    def _two_server(self, project: str) -> bool:
        try:
            return self.store.mode_of(project) == TWO_SERVER
        except NotFound:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [p for p in self._pending.values() if p.due <= now]
            for p in sorted(due, key=lambda p: p.seq):
                if self._stop.is_set():
                    return
                self._retry(p)
            with self._lock:
                first = min((p.due for p in self._pending.values()), default=None)
            self._wake.wait(None if first is None else max(0.0, first - time.monotonic()))
            self._wake.clear()

    def _retry(self, p: _Pending) -> None:
        p.attempts += 1
        try:
            error = self._attempt(p)
        except Exception as exc:  # the disk still full, say
            error = str(exc) or type(exc).__name__
        if not error:
            with self._lock:
                self._pending.pop(p.seq, None)
            return
        wait = self.waits[min(p.attempts, len(self.waits) - 1)]
        p.due = time.monotonic() + wait
        (log.warning if p.attempts == 1 or p.attempts % WARN_EVERY == 0 else log.info)(
            "%s/%s: the erasure logged as audit entry %d is not complete yet: %s; trying again "
            "in %.0f s (attempt %d)", p.project, p.member, p.seq, error, wait, p.attempts,
        )  # fmt: skip

    def _attempt(self, p: _Pending) -> str:
        """One try at the rest of the erasure: "" once it is complete (or was completed
        meanwhile: its intent gone), else what is still failing."""
        cut = self.store.intent(p.seq)
        if cut is None:
            log.info("%s/%s: the erasure logged as audit entry %d was completed meanwhile "
                     "(the member erased again, say)", p.project, p.member, p.seq)  # fmt: skip
            return ""
        forget_queries(self.store, self.realtime, cut.project, cut.member, cut.seq)
        index = self.realtime.index_store
        # (its index still in memory, unsearched, whatever the disk holds: dropped with it)
        p.index_records += self.realtime.indexes.erase_left(cut.project, cut.member, cut.seq) or 0
        index.db.checkpoint()
        failed = []
        remote = self.realtime.remote
        if remote is not None and remote.holding(cut.project, cut.member):
            self.realtime.indexes.erase_again(cut.project, cut.member)  # (one back takes it)
            if remote.holding(cut.project, cut.member):
                remote.catch_up()  # (one without a data dir is loaded, on a thread of its own)
            if holding := remote.holding(cut.project, cut.member):
                failed.append(f"{', '.join(holding)} has not dropped the member's shards yet")
        for server in sorted(p.servers):
            if self.two_server is None:
                failed.append(f"{server}: this matcher has no two-server setup")
                continue
            forgot = self.two_server.forget_one(server, cut.project, cut.member)
            if forgot.error:
                failed.append(f"{server} has not forgotten the member's shares: {forgot.error}")
            else:
                p.servers.discard(server)
                p.dropped[server] = f"dropped {forgot.dropped}"
        if failed:
            return "; ".join(failed)
        more: dict[str, object] = {"attempts": p.attempts}
        if p.dropped:
            more["twoserver"] = dict(sorted(p.dropped.items()))
        detail = self.store.complete_erasure(cut, p.index_records, more, p.why)
        log.info(
            "%s/%s: the erasure logged as audit entry %d is complete, after %s in the "
            "background: %d standing-index records and %s deleted%s",
            cut.project, cut.member, cut.seq, counted(p.attempts, "attempt"), p.index_records,
            counted(cast(int, detail["upload_files"]), "upload file"),
            f", {', '.join(f'{s} {d}' for s, d in sorted(p.dropped.items()))}" if p.dropped
            else "",
        )  # fmt: skip
        return ""


__all__ = ["RETRIED", "ErasureRetries"]
