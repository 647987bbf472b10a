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

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.check import DB_NAME, check_data_dir, needed_uploads, open_read_only

ATTEMPTS = 5
INDEX_DB = "index.sqlite"
AUDIT_KEY = "audit.key"


class BackupError(Exception):
    """The backup could not be made; the destination was not created."""


@dataclass(frozen=True)
class BackupReport:
    dest: Path
    uploads: int
    bytes_copied: int
    attempts: int


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshot(source_db: Path, dest_db: Path) -> None:
    src = open_read_only(source_db)
    dst = sqlite3.connect(dest_db)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    _fsync(dest_db)


def _copy_needed(data_dir: Path, staging: Path) -> tuple[int, int] | None:
    """Copy the snapshot's needed CLK files; None when one vanished meanwhile."""
    db = open_read_only(staging / DB_NAME)
    try:
        needed = sorted(needed_uploads(db))
    finally:
        db.close()
    copied = 0
    for upload_id in needed:
        name = f"{upload_id}.bin"
        try:
            shutil.copyfile(data_dir / "clks" / name, staging / "clks" / name)
        except FileNotFoundError:
            return None
        _fsync(staging / "clks" / name)
        copied += (staging / "clks" / name).stat().st_size
    _fsync(staging / "clks")
    return len(needed), copied


def backup_data_dir(data_dir: str | Path, dest: str | Path) -> BackupReport:
    """Copy a (possibly live) data dir to `dest`, which must not exist yet."""
    data_dir, dest = Path(data_dir), Path(dest)
    if not (data_dir / DB_NAME).is_file():
        raise BackupError(f"{data_dir}: not a blindmatch data dir (no {DB_NAME})")
    if dest.exists():
        raise BackupError(f"{dest}: already exists; back up to a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.partial")
    for attempt in range(1, ATTEMPTS + 1):
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "clks").mkdir(parents=True)
        (staging / "tmp").mkdir()
        try:
            _snapshot(data_dir / DB_NAME, staging / DB_NAME)
            copied = _copy_needed(data_dir, staging)
            if (data_dir / INDEX_DB).is_file():
                _snapshot(data_dir / INDEX_DB, staging / INDEX_DB)
            if (data_dir / AUDIT_KEY).is_file():
                shutil.copy2(data_dir / AUDIT_KEY, staging / AUDIT_KEY)
                _fsync(staging / AUDIT_KEY)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(f"backing up {data_dir} failed: {exc}") from exc
        if copied is None:
            continue  # the matcher replaced an upload while we copied: take a new snapshot
        report = check_data_dir(staging)
        if not report.ok:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError("the copy failed its integrity check:\n" + report.render())
        staging.rename(dest)
        _fsync(dest.parent)
        return BackupReport(dest, copied[0], copied[1], attempt)
    shutil.rmtree(staging, ignore_errors=True)
    raise BackupError(
        f"{data_dir} changed under every one of {ATTEMPTS} attempts; try again when quieter"
    )
