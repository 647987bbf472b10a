"""The batch side's state: `blindmatch.sqlite` and the CLK files in `clks/`.

`Store` is assembled from one class per concern, each in its own module:

    project_store.py    projects, members, token hashes, consent
    upload_store.py     uploads and their CLK files, idempotent retries, a full disk
    run_store.py        runs, their inputs and progress, and their links
    request_store.py    request references issued from hits, and their resolution
    retention_store.py  erasure of a member, expiry of projects
    user_store.py       named users under a member, their token hashes
    retired_tokens.py   revoked and rotated-away tokens' hashes, so their holders are told
    outcome_store.py    what a two-server run learned of each pair of uploads (reused)
    ticket_store.py     the two-server uploads a member started and the matcher has not taken
    audit_log.py        the hash-chained audit log (`store.audit`)

Every write goes through one connection under one lock (sqlite.py); every change that
the audit log records is appended in the same transaction as the change itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from blindmatch.matcher.storage import (
    audit_log,
    outcome_store,
    project_store,
    request_store,
    retention_store,
    retired_tokens,
    run_store,
    ticket_store,
    upload_store,
    user_store,
)
from blindmatch.matcher.storage.audit_log import AuditLog, entry_count, read_key
from blindmatch.matcher.storage.datadir import DataDir, upload_id_of
from blindmatch.matcher.storage.dirowner import MATCHER, refuse_others
from blindmatch.matcher.storage.diskroom import DiskRoom
from blindmatch.matcher.storage.erasure_log import unreferenced_files
from blindmatch.matcher.storage.index_store import refuse_newer_index
from blindmatch.matcher.storage.outcome_store import OutcomeStore
from blindmatch.matcher.storage.request_store import RequestStore
from blindmatch.matcher.storage.retention_store import RetentionStore
from blindmatch.matcher.storage.sqlite import Database
from blindmatch.matcher.storage.ticket_store import StartedUploads
from blindmatch.matcher.storage.user_store import UserStore

SCHEMA = (
    project_store.SCHEMA
    + upload_store.SCHEMA
    + run_store.SCHEMA
    + request_store.SCHEMA
    + audit_log.SCHEMA
    + user_store.SCHEMA
    + outcome_store.SCHEMA
    + retention_store.SCHEMA
    + ticket_store.SCHEMA
    + retired_tokens.SCHEMA
)
PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "secure_delete=ON")


class Store(UserStore, RequestStore, RetentionStore, OutcomeStore, StartedUploads):
    """Everything the batch side keeps, in one data dir.

    `min_free_bytes` is the disk space uploads must leave free; `clock` gives
    the time (seconds since 1970) for expiry and the audit log; `audit_key_file`
    is where the audit chain's key lives (default DIR/audit.key).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        min_free_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        audit_key_file: str | Path | None = None,
    ) -> None:
        self.files = DataDir(Path(data_dir))
        if self.files.db.is_file():  # a newer blindmatch's: refused before anything changes
            project_store.refuse_newer(self.files.db)
        if self.files.index_db.is_file():  # (the real-time side's, opened after this)
            refuse_newer_index(self.files.index_db)
        self.min_free_bytes = min_free_bytes
        self.room = DiskRoom(self.files.root, min_free_bytes)
        self.clock = clock
        refuse_others(self.files.root, MATCHER)  # S1's, S2's or the combiner's: not this one
        self.files.check_private()
        self.files.make()
        for leftover in self.files.tmp.iterdir():  # uploads a crash cut short
            leftover.unlink()
        self.db = Database(self.files.db, SCHEMA, pragmas=PRAGMAS)
        try:
            key = read_key(
                Path(audit_key_file) if audit_key_file else self.files.audit_key,
                entries=entry_count(self.db),
            )
        except BaseException:
            self.db.close()
            raise
        self.audit = AuditLog(self.db, key, clock)
        self._migrate()
        self.files_left_at_start = frozenset(  # (named by `complete_erasure`, then)
            u
            for c in self.cut_short_erasures()
            for u in c.uploads
            if self.files.clk_file(u).exists()
        )
        with self.db.reading() as conn:  # (an erasure found from the log names its own)
            in_clks = (upload_id_of(f) for f in self.files.clks.iterdir())
            self.unreferenced_at_start = frozenset(
                unreferenced_files(conn, (u for u in in_clks if u is not None))
            )
        self._collect_garbage()

    def close(self) -> None:
        self.db.close()
