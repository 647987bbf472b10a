"""`blindmatch admin restore`: a two-server role's data dir from a backup made by `admin
backup` (storage/role_backup.py), with what the role did after the backup replayed where it
is known (docs/operations.md "Backing up S1 and S2").

A backup is one moment of the role. Restored as it was, three things the role did after it
would be undone, each a privacy hazard against a dishonest combiner:

- the pairs it evaluated: the backup's uploads are sealed (their pairs with each other count
  as evaluated, core/pairbudget.py `seal`), so none is evaluated again;
- the uploads it forgot (a member's erasure, a project's expiry) would be back, and an upload
  replaced by a newer one would be held again in its place (`forget`: the erasures and
  expiries the matcher's audit log records since the backup, dropped when nothing else can
  say);
- the queries it counted against its query limit would be uncounted.

The role's audit log records the last two (`twoserver.forget` with the names dropped,
`twoserver.upload`, `twoserver.query`). When the log of the dir being replaced (`previous`)
survives, verifies with the key and continues the backup's chain (its entry at the backup's
head is the same), the restore adopts it (the longer history) and replays the entries after
the backup's head: it drops every restored upload forgotten or uploaded again since, and
counts every query again. Without `previous` nothing can be replayed, and the restore says
so (the caller must have asked for that explicitly). Either way a `twoserver.restore` entry
is appended, the copy passes `check_role_dir`, and only then is it renamed into place.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from blindmatch.matcher.core import audit, tickets
from blindmatch.matcher.core.rowledger import KINDS
from blindmatch.matcher.storage.audit_log import KEY_BYTES, read_entries
from blindmatch.matcher.storage.backup import copy_database, not_new
from blindmatch.matcher.storage.datadir import copy_private, fsync_path
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found
from blindmatch.matcher.storage.role_check import RoleFiles, check_role_dir
from blindmatch.matcher.storage.role_store import LAYOUT, RoleStore, newer_held
from blindmatch.matcher.storage.sqlite import newer_layout
from blindmatch.matcher.storage.twoserver_audit import RoleAudit

T = TypeVar("T")


class RestoreError(Exception):
    """The restore could not be made; the data dir was not created."""


class RestoreRefused(RestoreError):
    """Refused as given, nothing written: a `--data-dir` that is there (or cannot be made),
    a backup, `--previous` dir, audit key or `--forget` that is not what it must be. The
    command line's bad input (exit 2); any other `RestoreError` is a restore that failed."""


@dataclass
class RoleRestoreReport:
    dest: Path
    role: str
    uploads: int  # held by the restored dir
    sealed: int
    previous: Path | None  # the dir whose log was replayed
    taken: float | None  # when the backup was taken (its seal)
    replayed: int = 0  # its entries after the backup's head
    dropped: list[str] = field(default_factory=list)  # forgotten or replaced since
    queries: int = 0  # counted since, counted again
    ledger: int = 0  # S1's ledger entries (core/rowledger.py) the restored dir holds


def log_head(log: Path) -> tuple[int, str] | None:
    """The (seq, hash) of the last entry of the audit log `log` (None: no log, or empty)."""
    if not log.is_file():
        return None
    row = reading(log, lambda db: db.execute(
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone())  # fmt: skip
    return (int(row[0]), str(row[1])) if row else None


def reading(log: Path, read: Callable[[sqlite3.Connection], T]) -> T:
    """`read` of the audit log `log` (WAL mode), leaving its folder as it was found (the
    backup, or the `--previous` dir moved aside: no -wal or -shm made; sqlite.py
    `left_as_found`). The matcher's restore (usecases/restore.py) reads its logs so too."""

    def once() -> T:
        db = connect_read_only(log)
        try:
            return read(db)
        finally:
            db.close()

    return left_as_found([log], once)


def _upto(log: Path) -> list[audit.Entry]:
    """The backup's own log's entries (none without one)."""
    if not log.is_file():
        return []
    return reading(log, lambda db: list(read_entries(db)))


def _adopt(log: Path, key: bytes, head: tuple[int, str] | None, into: Path) -> list[audit.Entry]:
    """The entries of the `--previous` dir's `log` after the backup's `head`
    (`entries_after`), and the log copied to `into` (backup.py `copy_database`), both of one
    moment of it, its folder left as it was found."""

    def read(db: sqlite3.Connection) -> list[audit.Entry]:
        db.execute("BEGIN")  # (the entries checked are the ones copied)
        after = entries_after(log, key, head, db, NO_PREVIOUS)
        copy_database(db, into)  # the longer history, adopted (replacing the backup's)
        return after

    return reading(log, read)


NO_PREVIOUS = "; or restore without it (--no-previous), replaying nothing"


def entries_after(
    log: Path, key: bytes, head: tuple[int, str] | None, db: sqlite3.Connection, fix: str
) -> list[audit.Entry]:
    """The entries of `log` (read through `db`) after the backup's `head`, once the whole
    chain verifies and holds that head; `fix` ends each refusal (what to do instead)."""
    try:
        entries = list(read_entries(db))
    except sqlite3.Error as exc:
        raise RestoreError(f"{log}: its audit log cannot be read ({exc}){fix}") from None
    found = audit.verify(key, entries)
    if not found.ok:
        raise RestoreError(f"{log}: its audit log does not verify ({found.problems[0]}){fix}")
    if head is not None and not any((e.seq, e.hash) == head for e in entries):
        raise RestoreRefused(
            f"{log}: its audit log does not continue the backup's (no entry {head[0]}:"
            f"{head[1][:16]}...): not the dir this backup was taken of{fix}"
        )
    return [e for e in entries if head is None or e.seq > head[0]]


def _not_as_logged(rows: list[tuple[str, str]], before: list[audit.Entry]) -> set[str]:
    """The restored uploads (name, metadata rows) the backup's own log (`before`) says were
    uploaded again with another SHA-256 (logged, not yet stored at the backup's moment:
    stored and acknowledged after it), or forgotten after their upload (a backup that
    copied its held store before its log, from before they were read together)."""
    last: dict[str, tuple[int, object]] = {}
    forgot: dict[str, int] = {}
    for e in before:
        if e.action == "twoserver.upload":
            last[e.member] = (e.seq, e.detail.get("sha256"))
        elif e.action == "twoserver.forget":
            names = e.detail.get("names")
            forgot |= {str(n): e.seq for n in names} if isinstance(names, list) else {}
    stale = set()
    for name, meta in rows:
        try:
            digest = json.loads(meta).get("sha256")
        except (ValueError, AttributeError):
            continue  # (the check names it)
        seq, logged = last.get(name, (0, digest))
        if logged != digest or forgot.get(name, -1) > seq:
            stale.add(name)
    return stale


def _replay(
    store: RoleStore, after: list[audit.Entry], forget: list[str], before: list[audit.Entry]
) -> tuple[list[str], int]:
    """Drop the restored uploads forgotten or uploaded again in `after` (or, unstored at the
    backup's moment, in `before`, the backup's log), and those under `forget` (PROJECT or
    PROJECT/MEMBER, as a combiner's `Forget` names them), and count its queries again: the
    names dropped, and the queries."""
    gone: set[str] = set()
    replaced: set[str] = set()  # PROJECT/MEMBER/ that uploaded again
    queries = 0
    for e in after:
        if e.action == "twoserver.forget":
            names = e.detail.get("names", [])
            if isinstance(names, list):
                gone.update(str(n) for n in names)
        elif e.action == "twoserver.upload" and not tickets.is_query(e.member):
            gone.add(e.member)
            if "/" in e.member:  # a project member's upload replaces its others (any tag)
                replaced.add(e.member.rsplit("/", 1)[0] + "/")
        elif e.action == "twoserver.query":
            project, _, member = e.member.partition("/")
            store.count_query(str(e.detail.get("query", "")), project, member,
                              int(str(e.detail.get("records", 0))), e.time)  # fmt: skip
            queries += 1
    with store.db.reading() as conn:
        rows = conn.execute("SELECT name, meta FROM uploads").fetchall()
    held = {str(n) for n, _ in rows}
    gone.update(_not_as_logged(rows, before))
    prefixes = (*replaced, *(f"{f.strip('/')}/" for f in forget))
    gone.update(n for n in held if prefixes and n.startswith(prefixes))
    dropped = sorted(gone & held)
    store.drop(dropped)
    return dropped, queries


def restore_role_dir(
    backup: str | Path,
    data_dir: str | Path,
    role: str,
    *,
    key_file: str | Path | None = None,
    previous: str | Path | None = None,
    forget: list[str] | None = None,
) -> RoleRestoreReport:
    """Make `data_dir` (new) role `role`'s data dir from `backup`, its audit key from
    `key_file` (default: the one in `previous`), replaying `previous`'s log after the
    backup's head (None: nothing replayed) and dropping the uploads under `forget`
    (PROJECT or PROJECT/MEMBER: erasures and expiries since the backup, from the matcher's
    audit log)."""
    for name in forget or []:
        if not name.strip("/") or name.strip("/").count("/") > 1:
            raise RestoreRefused(f"--forget {name!r}: PROJECT or PROJECT/MEMBER")
    source, dest = RoleFiles(Path(backup), role), Path(data_dir)
    prev = RoleFiles(Path(previous), role) if previous is not None else None
    if not source.held_db.is_file():
        raise RestoreRefused(
            f"--backup {backup}: not a backup of role {role} (no {source.held_db.name})"
        )
    newer = newer_layout(source.held_db, LAYOUT)
    if newer is not None:  # (before anything is written: its tables may not be these)
        raise RestoreRefused(
            f"{newer_held(source.held_db, newer)}: restore it with that blindmatch (nothing "
            "written)"
        )
    why = not_new(dest)
    if why == "already exists":
        raise RestoreRefused(
            f"--data-dir {dest}: already exists (left as it is); move it aside and give it as "
            "--previous, so that what the role did after the backup is replayed from its "
            "audit log, or give a new folder"
        )
    if why:
        raise RestoreRefused(f"--data-dir {dest}: {why}; give a new folder (nothing written)")
    if prev is not None and not prev.audit_db.is_file():
        raise RestoreRefused(
            f"--previous {prev.root}: no {prev.audit_db.name} there, not role {role}'s data "
            "dir; give the one this backup was taken of, or restore with --no-previous"
        )
    key_path = Path(key_file) if key_file else (prev.audit_key if prev else None)
    head = log_head(source.audit_db)
    if head is not None and (key_path is None or not key_path.is_file()):
        raise RestoreRefused(
            f"{source.audit_db} holds {head[0]} audit entries: give the role's audit key "
            "(--audit-key FILE, the one `admin backup --key-out` wrote)"
        )
    if key_path is not None and key_path.is_file() and key_path.stat().st_size < KEY_BYTES:
        raise RestoreRefused(
            f"--audit-key {key_path}: holds {key_path.stat().st_size} bytes, not an audit key "
            f"(at least {KEY_BYTES}); give the one `admin backup --key-out` wrote"
        )
    staging = RoleFiles(dest.with_name(f".{dest.name}.partial"), role)

    def make() -> RoleRestoreReport:
        shutil.copytree(source.root, staging.root)  # (owner-only modes kept)
        if key_path is not None and key_path.is_file():
            copy_private(key_path, staging.audit_key)
        after: list[audit.Entry] = []
        if prev is not None:
            key = staging.audit_key.read_bytes()
            after = _adopt(prev.audit_db, key, head, staging.audit_db)
        before = _upto(source.audit_db)
        report = _apply(staging, role, dest, after, prev, forget or [], before)
        check = check_role_dir(staging.root, role)
        if not check.ok:
            raise RestoreError("the restored dir failed its integrity check:\n" + check.render())
        return report

    return staged(backup, staging.root, dest, make)


def staged(backup: str | Path, staging: Path, dest: Path, make: Callable[[], T]) -> T:
    """What `make()` returns, once it has built a restored data dir in `staging` (beside
    `dest`, emptied first: what a killed restore left) and that is renamed to `dest`. A
    failure (any, an interrupt too) leaves neither; one that is not a `RestoreError` is
    raised as one (the restore failed). The matcher's restore (usecases/restore.py) too."""
    shutil.rmtree(staging, ignore_errors=True)
    try:
        made = make()
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, RestoreError) or not isinstance(exc, Exception):
            raise
        raise RestoreError(f"restoring {backup} failed: {exc}") from exc
    fsync_path(staging)
    staging.rename(dest)
    fsync_path(dest.parent)
    return made


def _apply(
    staging: RoleFiles, role: str, dest: Path, after: list[audit.Entry],
    prev: RoleFiles | None, forget: list[str], before: list[audit.Entry],
) -> RoleRestoreReport:  # fmt: skip
    store = RoleStore(staging.root, role)
    try:
        with store.db.reading() as conn:
            taken = conn.execute("SELECT MAX(at) FROM sealed").fetchone()[0]
        dropped, queries = _replay(store, after, forget, before)
        with store.db.reading() as conn:
            uploads = conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0]
            sealed = conn.execute("SELECT COUNT(*) FROM sealed").fetchone()[0]
            ledger = dict.fromkeys(KINDS, 0)  # S1's ledger entries kept (core/rowledger.py)
            for kind, size in conn.execute("SELECT kind, SUM(LENGTH(rows_a)) FROM ledger "
                                           "GROUP BY kind"):  # fmt: skip
                ledger[str(kind)] = int(size) // 4
    finally:
        store.close()
    log = RoleAudit(staging.root, role)
    try:
        log.log.append(audit.Event("operator", "twoserver.restore", detail={
            "role": role, "uploads": uploads, "sealed": sealed,
            "replayed": len(after) if prev else None, "forget": forget, "dropped": dropped,
            "queries": queries, "backup_taken": taken,
            **({"ledger": ledger} if role == "s1" else {}),
        }))  # fmt: skip
    finally:
        log.close()
    previous = prev.root if prev else None
    return RoleRestoreReport(dest, role, uploads, sealed, previous, taken, len(after), dropped,
                             queries, sum(ledger.values()))  # fmt: skip


__all__ = [
    "RestoreError",
    "RestoreRefused",
    "RoleRestoreReport",
    "entries_after",
    "log_head",
    "reading",
    "restore_role_dir",
    "staged",
]
