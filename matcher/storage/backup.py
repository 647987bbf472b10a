"""`blindmatch admin backup`: a consistent copy of a data dir, taken while it serves.

1. The database is copied with SQLite's online backup API: one consistent
   snapshot, taken without stopping the matcher (writers wait a moment at most).
2. The CLK files that snapshot needs are copied from `clks/`. Upload files are
   written once and never changed, so a plain copy is consistent; one that the
   matcher deleted in the meantime (the member uploaded again) makes the backup
   start over from a fresh snapshot.
3. The standing indexes (`index.sqlite`, real-time queries) are snapshotted the
   same way. The audit chain's key (`audit.key`) is **not** copied beside them:
   whoever holds a backup and its key could edit the log and re-seal it. It goes,
   when asked (`key_out`), to a file of its own, to be kept apart (another volume,
   another custodian); the report carries the chain's head (SEQ:HASH) to record
   elsewhere as an anchor for `audit verify --anchor`.
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
    anchor: str  # the audit chain's head in the backup, SEQ:HASH ("" for an empty log)
    key_out: Path | None  # where the audit key was copied, apart from the backup


def anchor_of(db_path: Path) -> str:
    db = connect_read_only(db_path)
    try:
        row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return f"{row[0]}:{row[1]}" if row else ""


def copy_key(source: Path, key_out: Path, dest: Path) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no audit key there to copy (give --audit-key where it is)")
    if key_out.resolve().is_relative_to(dest.resolve()):
        raise BackupError(
            f"--key-out {key_out}: inside the backup; the key must be kept apart from it"
        )
    try:
        copy_private(source, key_out)
    except FileExistsError:
        raise BackupError(f"--key-out {key_out}: already exists; choose a new file") from None


def snapshot(source_db: Path, dest_db: Path) -> None:
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


def backup_data_dir(
    data_dir: str | Path,
    dest: str | Path,
    *,
    key_out: str | Path | None = None,
    audit_key_file: str | Path | None = None,
) -> BackupReport:
    """Copy a (possibly live) data dir to `dest`, which must not exist yet, without its
    audit key; with `key_out`, the key (from `audit_key_file`, default DIR/audit.key) is
    copied there, a new owner-only file that may not lie inside `dest`."""
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
            snapshot(source.db, staging.db)
            copied = _copy_needed(source, staging)
            if source.index_db.is_file():
                snapshot(source.index_db, staging.index_db)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(staging.root, ignore_errors=True)
            raise BackupError(f"backing up {data_dir} failed: {exc}") from exc
        if copied is None:
            continue  # the matcher replaced an upload while we copied: take a new snapshot
        # The key stays apart: the chain is checked where the key is, when it is given.
        key = Path(audit_key_file) if audit_key_file else source.audit_key
        report = check_data_dir(
            staging.root, audit_key_file=key if key.is_file() else None, require_key=False
        )
        if not report.ok:
            shutil.rmtree(staging.root, ignore_errors=True)
            raise BackupError("the copy failed its integrity check:\n" + report.render())
        if key_out is not None:
            try:
                copy_key(key, Path(key_out), dest)
            except BackupError:
                shutil.rmtree(staging.root, ignore_errors=True)
                raise
        anchor = anchor_of(staging.db)
        staging.root.rename(dest)
        fsync_path(dest.parent)
        return BackupReport(
            dest, copied[0], copied[1], attempt, anchor, Path(key_out) if key_out else None
        )
    shutil.rmtree(staging.root, ignore_errors=True)
    raise BackupError(
        f"{data_dir} changed under every one of {ATTEMPTS} attempts; try again when quieter"
    )
