"""`blindmatch admin backup`: a consistent copy of a data dir, taken while it serves.

1. The database is copied with SQLite's online backup API: one consistent
   snapshot, taken without stopping the matcher (writers wait a moment at most).
2. The CLK files that snapshot needs are copied from `clks/`. Upload files are
   written once and never changed, so a plain copy is consistent; one that the
   matcher deleted in the meantime (the member uploaded again) makes the backup
   start over from a fresh snapshot.
3. The standing indexes (`index.sqlite`, real-time queries) are snapshotted the
   same way, and the audit chain's key (`audit.key`) is copied: without it the
   restored audit log cannot be verified.
4. The copy is fsynced, checked with `check_data_dir` (every file's sha256
   against the database), and only then renamed to the destination.

The destination is itself a data dir: restoring is starting `blindmatch serve
--data-dir` on it (see docs/operations.md).
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.storage.datadir import (
    DB_NAME,
    DataDir,
    copy_private,
    create_private_file,
    fsync_path,
)
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.sqlite import connect_read_only
from blindmatch.matcher.storage.upload_store import needed_uploads

ATTEMPTS = 5


class BackupError(Exception):
    """The backup could not be made; the destination was not created."""


@dataclass(frozen=True)
class BackupReport:
    dest: Path
    uploads: int
    bytes_copied: int
    attempts: int


def _snapshot(source_db: Path, dest_db: Path) -> None:
    src = connect_read_only(source_db)
    create_private_file(dest_db)
    dst = sqlite3.connect(dest_db)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    fsync_path(dest_db)


def _copy_needed(source: DataDir, staging: DataDir) -> tuple[int, int] | None:
    """Copy the snapshot's needed CLK files; None when one vanished meanwhile."""
    db = connect_read_only(staging.db)
    try:
        needed = sorted(needed_uploads(db))
    finally:
        db.close()
    copied = 0
    for upload_id in needed:
        try:
            copy_private(source.clk_file(upload_id), staging.clk_file(upload_id))
        except FileNotFoundError:
            return None
        copied += staging.clk_file(upload_id).stat().st_size
    fsync_path(staging.clks)
    return len(needed), copied


def backup_data_dir(data_dir: str | Path, dest: str | Path) -> BackupReport:
    """Copy a (possibly live) data dir to `dest`, which must not exist yet."""
    source, dest = DataDir(Path(data_dir)), Path(dest)
    if not source.db.is_file():
        raise BackupError(f"{data_dir}: not a blindmatch data dir (no {DB_NAME})")
    if dest.exists():
        raise BackupError(f"{dest}: already exists; back up to a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = DataDir(dest.with_name(f".{dest.name}.partial"))
    for attempt in range(1, ATTEMPTS + 1):
        shutil.rmtree(staging.root, ignore_errors=True)
        staging.make()
        try:
            _snapshot(source.db, staging.db)
            copied = _copy_needed(source, staging)
            if source.index_db.is_file():
                _snapshot(source.index_db, staging.index_db)
            if source.audit_key.is_file():
                copy_private(source.audit_key, staging.audit_key)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(staging.root, ignore_errors=True)
            raise BackupError(f"backing up {data_dir} failed: {exc}") from exc
        if copied is None:
            continue  # the matcher replaced an upload while we copied: take a new snapshot
        # The key comes along when it lives in the data dir; kept apart, it is checked there.
        report = check_data_dir(staging.root, require_key=staging.audit_key.is_file())
        if not report.ok:
            shutil.rmtree(staging.root, ignore_errors=True)
            raise BackupError("the copy failed its integrity check:\n" + report.render())
        staging.root.rename(dest)
        fsync_path(dest.parent)
        return BackupReport(dest, copied[0], copied[1], attempt)
    shutil.rmtree(staging.root, ignore_errors=True)
    raise BackupError(
        f"{data_dir} changed under every one of {ATTEMPTS} attempts; try again when quieter"
    )
