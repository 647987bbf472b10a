"""`blindmatch admin backup` of a two-server role's data dir, taken while the role serves
(docs/operations.md "Backing up S1 and S2").

1. The held store (`twoserver-ROLE-held.sqlite`: the uploads' rows, the pair budget and the
   queries counted) is copied with SQLite's online backup API: one moment's uploads and
   budget together.
2. The files those rows name are copied from `twoserver-ROLE-held/` (an upload's `F.bin`,
   and S1's `F.NAME.bin` beside it: storage/role_files.py). A file is written once
   and never changed; those not copied yet are opened before the snapshot (backup.py
   `pinned`), so one the role deletes meanwhile (a member's new upload, a `Forget`) is copied
   all the same; one placed after that and deleted before it is copied makes the backup take
   a fresh snapshot, keeping the files it copied already (backup.py `converge`).
3. The audit log (`twoserver-ROLE.sqlite`) is snapshotted at the same moment as the held
   store (backup.py `read_together`: both read transactions opened while this holds the
   held store's write lock, then copied). The role logs an upload before it stores it and
   stores a `Forget` (drops the upload) before it logs it, so the copy never holds an
   upload its log lacks, nor one its log says was forgotten (snapshotted one after the
   other, a member's `Forget` between the two left an erased upload in the copy, and a
   member's new upload between them failed the copy's check: its log's last entry of the
   upload named another SHA-256). An upload logged and not yet stored at that moment (in
   flight: not acknowledged) is in the copy's log only; `admin check` notes it, as it
   would after a crash between the two. The audit key is **not** copied beside the log
   (whoever held both could edit the log and re-seal it): with `key_out` it goes to a file
   of its own, to be kept apart. The report carries the chain's head (SEQ:HASH), an anchor
   to record elsewhere.
4. Every upload of the copy is **sealed** (the held store's `sealed` table, with the moment
   the snapshot was taken): a role started on a restored copy counts every pair of two
   restored uploads as evaluated (core/pairbudget.py `seal`). The copy's budget is the
   snapshot's, and the pairs the role evaluated after it were not in it: restoring it as it
   was would let a combiner have those pairs evaluated again, at other cut-offs (more bits
   of their distance, docs/privacy-design.md "What a dishonest combiner can still learn").
   A member's new upload starts its pairs afresh, as always; queries, and pairs with a new
   upload, are evaluated as before.
5. The copy is fsynced, checked with `check_role_dir`, and only then renamed to the
   destination, which is then the role's data dir to restore (`two-server role --data-dir`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.storage import role_store
from blindmatch.matcher.storage.backup import (
    BackupRefused,
    anchor_of,
    converge,
    copy_database,
    copy_kept,
    pinned,
    read_together,
    snapshot,
)
from blindmatch.matcher.storage.datadir import fsync_path
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found
from blindmatch.matcher.storage.role_check import RoleFiles, check_role_dir, upload_files
from blindmatch.matcher.storage.sqlite import newer_layout


@dataclass(frozen=True)
class RoleBackupReport:
    dest: Path
    role: str
    uploads: int
    bytes_copied: int
    pairs: int  # the pairs evaluated in the snapshot's budget
    attempts: int
    taken: float  # when the held store's snapshot was taken (the uploads' seal)
    anchor: str  # the audit chain's head in the backup, SEQ:HASH ("" for an empty log)
    key_out: Path | None  # where the audit key was copied, apart from the backup


def _take(source: RoleFiles, staging: RoleFiles, clock: Callable[[], float]
          ) -> tuple[int, int, int, float] | None:  # fmt: skip
    """One attempt: the files not copied yet opened (`pinned`), the held store's and the
    audit log's snapshots (of one moment), the files the first's rows name (those an
    earlier attempt copied kept), the seal; the files, bytes, pairs and when the snapshot
    was taken, or None when a file vanished meanwhile."""
    with pinned(source.folder, staging.folder) as pins:
        if source.audit_db.is_file():  # (both at one moment: see the module's 3.)
            with read_together(source.audit_db, source.held_db) as (log, held):
                taken = clock()
                copy_database(held, staging.held_db)
                copy_database(log, staging.audit_db)
        else:
            snapshot(source.held_db, staging.held_db)
            taken = clock()
        db = connect_read_only(staging.held_db)
        try:
            files = [name for f, meta in db.execute("SELECT file, meta FROM uploads ORDER BY id")
                     for name in upload_files(f, meta)]  # fmt: skip
        finally:
            db.close()
        copied = copy_kept(files, source.folder, staging.folder, pins)
    if copied is None:
        return None
    if staging.audit_db.is_file():
        _settle(staging.audit_db)
    return copied[0], copied[1], _seal(staging.held_db, taken), taken


def _seal(held_db: Path, taken: float) -> int:
    """Seal every upload of the copy (its pairs with the others count as evaluated once
    restored); the pairs in the copy's budget."""
    db = sqlite3.connect(held_db, isolation_level=None)
    try:
        db.executescript(role_store.SCHEMA)  # (a store from before `sealed` lacks the table)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR IGNORE INTO sealed (upload, at) SELECT id, ? FROM uploads", (taken,))
        db.execute("COMMIT")
        pairs = db.execute("SELECT COALESCE(SUM(length(keys)), 0) / 8 FROM spent").fetchone()[0]
    finally:
        db.close()
    _settle(held_db)
    return int(pairs)


def _settle(path: Path) -> None:
    """A copied database as one file (no -wal, -shm; the role's start makes it WAL again),
    fsynced."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    fsync_path(path)


def backup_role_dir(
    data_dir: str | Path,
    dest: str | Path,
    role: str,
    *,
    key_out: str | Path | None = None,
    audit_key_file: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> RoleBackupReport:
    """Copy a (possibly serving) role's data dir to `dest`, which must not exist yet, its
    uploads sealed, without its audit key; with `key_out`, the key (from `audit_key_file`,
    default beside the log) is copied there, a new owner-only file not inside `dest`."""
    source, dest = RoleFiles(Path(data_dir), role), Path(dest)
    if not source.held_db.is_file():
        raise BackupRefused(
            f"--data-dir {data_dir}: not role {role}'s data dir (no {source.held_db.name})"
        )
    newer = newer_layout(source.held_db, role_store.LAYOUT)
    if newer is not None:  # (its tables may not be the ones copied and sealed)
        raise BackupRefused(
            f"{role_store.newer_held(source.held_db, newer)}: back it up with that blindmatch "
            "(nothing written)"
        )
    key = Path(audit_key_file) if audit_key_file else source.audit_key
    (uploads, copied, pairs, taken), attempts = converge(
        source.root,
        dest,
        lambda staging: left_as_found(
            [source.held_db, source.audit_db],
            lambda: _take(source, RoleFiles(staging, role), clock),
        ),
        lambda staging: check_role_dir(
            staging, role, audit_key_file=key if key.is_file() else None, require_key=False
        ),
        key=key,
        key_out=Path(key_out) if key_out is not None else None,
    )
    audit_db = RoleFiles(dest, role).audit_db
    anchor = anchor_of(audit_db) if audit_db.is_file() else ""
    return RoleBackupReport(dest, role, uploads, copied, pairs, attempts, taken, anchor,
                            Path(key_out) if key_out else None)  # fmt: skip


__all__ = ["RoleBackupReport", "backup_role_dir"]
