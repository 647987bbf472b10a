"""What the parts of `Store` share: the data dir, the database, the audit log, the clock.

Each concern of the batch side's state is one class in its own module (projects and
tokens, uploads, runs, retention), all mixed into `Store`, which sets these up once.
Every change the audit log records is appended with `self.audit.append_in(tx, ...)`
inside the transaction that makes the change: both are stored, or neither.
"""

from __future__ import annotations

from collections.abc import Callable

from blindmatch.matcher.domain import ACTIVE
from blindmatch.matcher.storage.audit_log import AuditLog
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.diskroom import DiskRoom
from blindmatch.matcher.storage.sqlite import Database

# Runs in these states read their inputs' CLK files: "state IN ('queued','running')".
ACTIVE_SQL = "(" + ",".join(f"'{state}'" for state in ACTIVE) + ")"


class StoreBase:
    files: DataDir
    db: Database
    audit: AuditLog
    clock: Callable[[], float]
    min_free_bytes: int
    room: DiskRoom  # the disk space uploads in flight were promised (diskroom.py)
