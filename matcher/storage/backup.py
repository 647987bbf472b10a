"""`blindmatch admin backup`: a consistent copy of a data dir, taken while it serves.

1. The database is copied with SQLite's online backup API: one consistent
   snapshot, taken without stopping the matcher (writers wait a moment at most).
   The standing indexes (`index.sqlite`, real-time queries) are snapshotted the
   same way, at a moment that holds the same index changes as the database's
   audit log (`read_together`: both read transactions opened under the index's
   write lock, then copied), so a restored matcher's index is the one its log says.
2. The CLK files that snapshot needs are copied from `clks/`. Upload files are
   written once and never changed, so a plain copy is consistent; one that the
   matcher deleted in the meantime (the member uploaded again) makes the backup
   take a fresh snapshot, keeping the files it copied already (only the new
   snapshot's other files are copied then, so a retry is short even beside a
   member uploading again and again; `converge`, shared with role_backup.py).
   Before each snapshot the files not copied yet are opened (`pinned`): one the
   snapshot names and the matcher deletes before it is copied is read through
   its handle, so a retry is needed only for a file placed after that and
   deleted again before it is copied.
3. The audit chain's key (`audit.key`) is **not** copied beside them:
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

import errno
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from blindmatch.matcher.storage.datadir import (
    DB_NAME,
    DataDir,
    copy_private,
    create_private_file,
    fsync_path,
    make_private_dir,
)
from blindmatch.matcher.storage.integrity import check_data_dir, newer_store_in
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found, read_as_immutable
from blindmatch.matcher.storage.upload_store import needed_uploads

ATTEMPTS = 10
# The index's write lock (`read_together`) is waited for as long as a change being stored
# holds it (one huge change: minutes); each time this many seconds pass, `waiting` is told.
LOCK_WAIT_S = 10.0
PINNED = 256  # files held open at once by one attempt (`pinned`)
T = TypeVar("T")
Waiting = Callable[[float], None]  # told the seconds waited so far for the index's lock

log = logging.getLogger("blindmatch.matcher")


class BackupError(Exception):
    """The backup could not be made; the destination was not created."""


class BackupRefused(BackupError):
    """Refused as given, before anything was written: a path named that must be new and is
    there (or cannot be made: a file where a folder is needed above it, no permission), or
    one that must be a data dir (or the audit key) and is not. The command line's bad input
    (exit 2); any other `BackupError` is a backup that failed (exit 1)."""


def not_new(dest: Path) -> str | None:
    """Why `dest` cannot be made as a new folder (None: it can): it is there already (a
    folder, a file or a link), or the nearest folder above it that is there is a file, or
    may not be written by this user."""
    if dest.exists() or dest.is_symlink():
        return "already exists"
    above = dest.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return f"{above} is a file, not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"{above} may not be written by this user"
    return None


@dataclass(frozen=True)
class BackupReport:
    dest: Path
    uploads: int
    bytes_copied: int
    attempts: int
    anchor: str  # the audit chain's head in the backup, SEQ:HASH ("" for an empty log)
    key_out: Path | None  # where the audit key was copied, apart from the backup


def anchor_of(db_path: Path) -> str:
    """The head of the audit chain in `db_path` (a backup's: nothing made beside it)."""

    def head() -> str:
        db = connect_read_only(db_path)
        try:
            row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        finally:
            db.close()
        return f"{row[0]}:{row[1]}" if row else ""

    return left_as_found([db_path], head)


def check_key_out(source: Path, key_out: Path, dest: Path) -> None:
    """`BackupRefused` unless the audit key `source` can be copied to `key_out`: checked
    before the backup starts, and again as the key is copied."""
    if not source.is_file():
        raise BackupRefused(f"{source}: no audit key there to copy (give --audit-key where it is)")
    if key_out.resolve().is_relative_to(dest.resolve()):
        raise BackupRefused(
            f"--key-out {key_out}: inside the backup; the key must be kept apart from it"
        )
    if key_out.exists() or key_out.is_symlink():
        raise BackupRefused(f"--key-out {key_out}: already exists; choose a new file")
    missing = _missing_folders(key_out)
    nearest = missing[-1].parent if missing else key_out.absolute().parent
    if not nearest.is_dir():  # a file where a folder above the key would be
        raise BackupRefused(f"--key-out {key_out}: {nearest} is not a folder (nothing written)")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise BackupRefused(f"--key-out {key_out}: {nearest} is not writable by this user "
                            "(nothing written)")  # fmt: skip


def _missing_folders(key_out: Path) -> list[Path]:
    """The folders above `key_out` that are not there yet, the innermost first."""
    missing, folder = [], key_out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def copy_key(source: Path, key_out: Path, dest: Path) -> None:
    check_key_out(source, key_out, dest)
    for folder in reversed(_missing_folders(key_out)):  # made, owner-only (they hold a key)
        make_private_dir(folder)
    try:
        copy_private(source, key_out)
    except FileExistsError:
        raise BackupRefused(f"--key-out {key_out}: already exists; choose a new file") from None


def snapshot(source_db: Path, dest_db: Path) -> None:
    """Copy a (possibly live) database to `dest_db`, replacing what an earlier attempt left
    there: one consistent moment, with SQLite's online backup API."""
    src = connect_read_only(source_db)
    try:
        copy_database(src, dest_db)
    finally:
        src.close()


def copy_database(src: sqlite3.Connection, dest_db: Path) -> None:
    """Copy the database `src` reads to `dest_db` (replacing what an earlier attempt left
    there): the moment of `src`'s open read transaction, or else one moment now."""
    for stale in (dest_db, dest_db.with_name(dest_db.name + "-wal"),
                  dest_db.with_name(dest_db.name + "-shm")):  # fmt: skip
        stale.unlink(missing_ok=True)
    create_private_file(dest_db)
    dst = sqlite3.connect(dest_db)
    try:
        src.backup(dst)  # (the backup API reads through `src`'s read transaction, if open)
    finally:
        dst.close()
    fsync_path(dest_db)


def _log_wait(waited: float) -> None:
    log.warning("%s", waiting_message(waited))


def waiting_message(waited: float) -> str:
    return (
        f"waiting for the standing indexes' write lock: an index change is being stored "
        f"({waited:.0f} s so far); the backup goes on as soon as it is"
    )


def _lock_index(lock: sqlite3.Connection, waiting: Waiting | None) -> None:
    """Take the index's write lock through `lock`, however long a change being stored holds
    it (SQLite gives up after the connection's timeout: tried again, `waiting` told)."""
    started = time.monotonic()
    while True:
        try:
            lock.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            (waiting or _log_wait)(time.monotonic() - started)


@contextmanager
def read_together(
    db: Path, index_db: Path, waiting: Waiting | None = None
) -> Iterator[list[sqlite3.Connection]]:
    """Read transactions on the database and on `index.sqlite` (when there is one) that see
    the same index changes: both are opened while this holds the index's write lock, so no
    change is stored between the two moments they see. (A change is announced in the audit
    log, then stored in the index, then settled in the log by a later write: a change the
    log snapshot holds but the index snapshot lacks was stored after both were opened, so
    the log snapshot still holds its announcement, which a restored matcher voids; a change
    the index snapshot holds was announced before it, so the log snapshot holds its entry.)
    The lock is held for the two openings only (writers wait well under a millisecond); the
    copies are made after, through the read transactions. A two-server role's backup reads
    its audit log (`db`) and held store (`index_db`) the same way (role_backup.py). The lock
    is waited for as long as a change being stored holds it, `waiting` told every
    `LOCK_WAIT_S` seconds (default: a logged warning): a backup never fails on it. Databases
    found at rest (quietread.py `left_as_found`: no process has them open) are read as
    immutable, with no lock taken (nothing makes a -wal or -shm beside them)."""
    conns = [connect_read_only(db)]
    try:
        if index_db.is_file():
            conns.insert(0, connect_read_only(index_db))
        if index_db.is_file() and not read_as_immutable(index_db):  # (else no writer to wait)
            lock = sqlite3.connect(index_db, timeout=LOCK_WAIT_S, isolation_level=None)
            try:
                _lock_index(lock, waiting)  # the index's writers wait from here
                for conn in conns:
                    conn.execute("BEGIN")
                    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # (opens it)
                lock.execute("ROLLBACK")
            finally:
                lock.close()
        yield conns[::-1]  # the database's first
    finally:
        for conn in conns:
            conn.close()


@contextmanager
def pinned(source: Path, have: Path) -> Iterator[dict[str, BinaryIO]]:
    """The `.bin` files of folder `source` that folder `have` lacks, opened before a snapshot
    is taken (up to `PINNED`; the rest are copied by name). A file is renamed into place
    before its row is committed and never changed, so one the snapshot names was either
    opened here or placed after the listing; one deleted before it is copied (its member
    uploaded again) is read whole through its open handle all the same."""
    files: dict[str, BinaryIO] = {}
    try:
        for path in sorted(source.glob("*.bin")) if source.is_dir() else []:
            if len(files) >= PINNED:
                break
            if (have / path.name).is_file():
                continue  # (copied by an earlier attempt)
            try:
                files[path.name] = open(path, "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                continue  # deleted meanwhile: not the snapshot's
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break  # (out of file handles: the rest are copied by name)
        yield files
    finally:
        for fh in files.values():
            fh.close()


def copy_kept(
    names: list[str], source: Path, dest: Path, pins: dict[str, BinaryIO]
) -> tuple[int, int] | None:
    """Copy the files `names` from folder `source` (or from `pins`, open before the
    snapshot that names them) to folder `dest`, but those an earlier attempt copied already
    (a file there is written once and never changed), and delete the copies in `dest` that
    `names` no longer has; the files and bytes now in `dest`, or None when one vanished from
    `source` meanwhile, unpinned (what was copied stays, for the next attempt)."""
    make_private_dir(dest)
    copied = 0
    for name in names:
        target = dest / name
        if not target.is_file():
            try:
                pin = pins.get(name)
                copy_private(pin if pin is not None else source / name, target)
            except FileNotFoundError:
                return None
        copied += target.stat().st_size
    wanted = set(names)
    for path in dest.iterdir():
        if path.name not in wanted:  # replaced or forgotten since an earlier attempt
            path.unlink()
    fsync_path(dest)
    return len(names), copied


class Checked(Protocol):
    """What a data dir's check returns (integrity.py `IntegrityReport`, role_check.py)."""

    @property
    def ok(self) -> bool: ...

    def render(self) -> str: ...


def converge(
    data_dir: Path,
    dest: Path,
    take: Callable[[Path], T | None],
    check: Callable[[Path], Checked],
    *,
    key: Path,
    key_out: Path | None,
) -> tuple[T, int]:
    """Back `data_dir` up to `dest` (which must not exist yet) through a staging folder
    beside it: `take(staging)` snapshots the databases there and copies the files the
    snapshot names, returning what it copied, or None when a file vanished meanwhile; then
    it is called again on the same staging folder (a new snapshot; the files it copied
    already are kept, so a retry copies only the new snapshot's other files, and converges
    beside a member uploading again and again), up to `ATTEMPTS` times. The copy must pass
    `check`; the audit key (`key`) goes to `key_out`, apart, if given; then the staging
    folder is renamed to `dest`. What `take` returned, and the attempts it took."""
    why = not_new(dest)
    if why:
        raise BackupRefused(f"--out {dest}: {why}; back up to a new folder (nothing written)")
    if key_out is not None:
        check_key_out(key, key_out, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    make_private_dir(staging)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                taken = take(staging)
            except (OSError, sqlite3.Error) as exc:
                raise BackupError(f"backing up {data_dir} failed: {exc}") from exc
            if taken is None:
                continue  # an upload was replaced while we copied: take a new snapshot
            report = check(staging)
            if not report.ok:
                raise BackupError(
                    f"the copy failed its integrity check, so no backup was made (no --out "
                    f"{dest}); what it found was copied from {data_dir}, unless `blindmatch "
                    f"admin check --data-dir {data_dir}` passes (a damaged upload: its member "
                    "uploads again, then back up again):\n" + report.render()
                )
            if key_out is not None:
                copy_key(key, key_out, dest)
            fsync_path(staging)
            staging.rename(dest)
            fsync_path(dest.parent)
            return taken, attempt
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    raise BackupError(
        f"{data_dir} changed under every one of {ATTEMPTS} attempts; try again when quieter"
    )


def _take(
    source: DataDir, staging: DataDir, waiting: Waiting | None = None
) -> tuple[int, int] | None:
    """One attempt: the CLK files not copied yet opened, the database's and the index's
    snapshots (of the same index changes: `read_together`), then the CLK files the first
    names."""
    staging.make()
    with pinned(source.clks, staging.clks) as pins:
        with read_together(source.db, source.index_db, waiting) as conns:
            for conn, dest in zip(conns, (staging.db, staging.index_db), strict=False):
                copy_database(conn, dest)
        needed = sorted(left_as_found([staging.db], lambda: _needed(staging.db)))
        names = [staging.clk_file(u).name for u in needed]
        return copy_kept(names, source.clks, staging.clks, pins)


def _needed(db_path: Path) -> set[str]:
    db = connect_read_only(db_path)
    try:
        return needed_uploads(db)
    finally:
        db.close()


def backup_data_dir(
    data_dir: str | Path,
    dest: str | Path,
    *,
    key_out: str | Path | None = None,
    audit_key_file: str | Path | None = None,
    waiting: Waiting | None = None,
) -> BackupReport:
    """Copy a (possibly live) data dir to `dest`, which must not exist yet, without its
    audit key; with `key_out`, the key (from `audit_key_file`, default DIR/audit.key) is
    copied there, a new owner-only file that may not lie inside `dest`. `waiting`: told
    while the backup waits for an index change being stored (`read_together`)."""
    source, dest = DataDir(Path(data_dir)), Path(dest)
    if not source.db.is_file():
        raise BackupRefused(f"--data-dir {data_dir}: not a blindmatch data dir (no {DB_NAME})")
    newer = newer_store_in(source)
    if newer is not None:  # (what it holds may not be what this one copies and checks)
        raise BackupRefused(f"{newer}: back it up with that blindmatch (nothing written)")
    key = Path(audit_key_file) if audit_key_file else source.audit_key
    # The key stays apart: the chain is checked where the key is, when it is given.
    (uploads, copied), attempts = converge(
        source.root,
        dest,
        lambda staging: left_as_found(
            [source.db, source.index_db], lambda: _take(source, DataDir(staging), waiting)
        ),
        lambda staging: check_data_dir(
            staging,
            audit_key_file=key if key.is_file() else None,
            require_key=False,
            in_backup=True,
        ),
        key=key,
        key_out=Path(key_out) if key_out is not None else None,
    )
    return BackupReport(dest, uploads, copied, attempts, anchor_of(DataDir(dest).db),
                        Path(key_out) if key_out else None)  # fmt: skip
