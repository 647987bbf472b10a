"""`blindmatch admin check` on a two-server role's data dir (`two-server role --data-dir`):
is what the role would hold again at its next start whole?

Reads the dir without changing it (safe beside a running role) and reports every problem
found, each naming the file or row at fault, not just the first:

- the held store `twoserver-ROLE-held.sqlite` passes `PRAGMA integrity_check` and
  `foreign_key_check`, and is of a layout this blindmatch knows (storage/role_store.py
  `LAYOUT`); every upload's metadata is JSON with its arrays' layout; every pair
  budget row is whole 8-byte keys;
- every upload's file `twoserver-ROLE-held/F.bin` is there, of the size its arrays' layout
  gives, and (unless `hash_files` is off) hashes to the SHA-256 stored with it, the digest
  the role's `twoserver.upload` audit entry carries: the checks the role's start makes
  (storage/role_store.py `load`), which refuses the start on any of them;
- the audit log `twoserver-ROLE.sqlite` passes `PRAGMA integrity_check`, its keyed hash
  chain verifies with its key (`twoserver-ROLE.audit.key`, or `audit_key_file`), it has
  every held upload's `twoserver.upload` entry with the SHA-256 the held store has (a log
  replaced, or cut short at its end, which the chain alone does not show), and no held
  upload was forgotten after that entry (`twoserver.forget`: a held store older than its
  log, which would hold an upload a member erased);
- everything is its owner's only (the role refuses a held store others can read).

What the next start repairs by itself is reported apart, as *will be repaired*: files in the
folder no row names (an upload in flight, or cut short by a crash; deleted at start); so is
a held upload logged again with another SHA-256 not held (logged, then not yet stored: the
role logs an upload before it stores it; nothing to repair). A
running role changes the dir while it is read: the rows are read in one snapshot, and a file
found missing, damaged or unnamed is judged again against a fresh snapshot taken after the
file was looked at, so an upload replaced or forgotten meanwhile is not reported."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.storage.audit_log import chain_problems
from blindmatch.matcher.storage.integrity import render_findings
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found, wal_notes
from blindmatch.matcher.storage.role_files import damage, files_of
from blindmatch.matcher.storage.role_store import LAYOUT, newer_held

ROLE_FILE = re.compile(r"^twoserver-([a-z0-9]+?)(-held)?\.sqlite$")


def roles_in(data_dir: Path) -> list[str]:
    """The roles whose files a data dir holds (`two-server role --role ROLE --data-dir`)."""
    if not data_dir.is_dir():
        return []
    found = (ROLE_FILE.match(p.name) for p in data_dir.iterdir())
    return sorted({m.group(1) for m in found if m})


@dataclass(frozen=True)
class RoleFiles:
    """The files of one role in its data dir (storage/role_store.py, twoserver_audit.py)."""

    root: Path
    role: str

    @property
    def held_db(self) -> Path:
        return self.root / f"twoserver-{self.role}-held.sqlite"

    @property
    def folder(self) -> Path:
        return self.root / f"twoserver-{self.role}-held"

    @property
    def audit_db(self) -> Path:
        return self.root / f"twoserver-{self.role}.sqlite"

    @property
    def audit_key(self) -> Path:
        return self.root / f"twoserver-{self.role}.audit.key"


@dataclass
class RoleReport:
    """What `check_role_dir` found: problems (must be none), what the role's next start
    repairs by itself, and what it looked at."""

    data_dir: Path
    role: str
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    uploads_checked: int = 0
    bytes_hashed: int = 0
    pairs_spent: int = 0
    sealed: int = 0
    queries: int = 0
    audit_entries: int = 0
    held_not_read: str | None = None  # why the held store was not read (its counts unsaid)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        head = (
            f"{self.data_dir} (two-server role {self.role}): held store not read "
            f"({self.held_not_read}), {self.audit_entries} audit entries"
            if self.held_not_read is not None  # (its counts, all 0, were never read: opsleft)
            else f"{self.data_dir} (two-server role {self.role}): "
            f"{_n(self.uploads_checked, 'upload')} verified ({self.bytes_hashed} bytes hashed), "
            f"{_n(self.pairs_spent, 'pair')} evaluated in the pair budget, "
            f"{_n(self.sealed, 'upload')} restored from a backup (sealed), "
            f"{_n(self.queries, 'query', 'queries')} counted, "
            f"{_n(self.audit_entries, 'audit entry', 'audit entries')}"
        )
        return render_findings(head, "the role", self.repairs, self.problems)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "role": self.role,
            "problems": self.problems,
            "will_be_repaired": self.repairs,
            "held_not_read": self.held_not_read,
            "uploads_checked": self.uploads_checked,
            "bytes_hashed": self.bytes_hashed,
            "pairs_spent": self.pairs_spent,
            "sealed": self.sealed,
            "queries": self.queries,
            "audit_entries": self.audit_entries,
        }


Row = tuple[str, str, str]  # an upload's name, file and metadata (JSON)


def check_role_dir(
    data_dir: str | Path,
    role: str,
    *,
    hash_files: bool = True,
    audit_key_file: str | Path | None = None,
    require_key: bool = True,
) -> RoleReport:
    """Check one role's files in `data_dir`; never modifies them. `audit_key_file`: where
    the role's audit key is kept, if not beside its log; without `require_key` a key found
    nowhere skips the chain's check instead of failing (a backup, whose key is kept apart).
    Nothing is left beside its databases either (quietread.py `left_as_found`); a -wal a
    killed role left is read, and said (`wal_notes`)."""
    files = RoleFiles(Path(data_dir), role)
    dbs = [files.held_db, files.audit_db]

    def check() -> RoleReport:
        report = _check(files, role, hash_files, audit_key_file, require_key)
        report.repairs += wal_notes(dbs)
        return report

    return left_as_found(dbs, check)


def _check(
    files: RoleFiles,
    role: str,
    hash_files: bool,
    audit_key_file: str | Path | None,
    require_key: bool,
) -> RoleReport:
    report = RoleReport(files.root, role)
    _check_private(files, report)
    rows = None
    if not files.held_db.is_file():
        report.problems.append(f"{files.held_db}: missing; is it role {role}'s data dir?")
        report.held_not_read = "missing"
    else:
        rows = _read_held(files.held_db, report, whole=True)
        if rows is not None:
            _check_uploads(files, rows, report, hash_files=hash_files)
    key = Path(audit_key_file) if audit_key_file else files.audit_key
    _check_audit(files.audit_db, key, report, require_key=require_key, held=rows or [],
                 fresh=lambda: _read_held(files.held_db, report, whole=False))  # fmt: skip
    return report


def _check_private(files: RoleFiles, report: RoleReport) -> None:
    paths = [files.root, files.held_db, files.folder, files.audit_db, files.audit_key]
    if files.folder.is_dir():
        paths += sorted(files.folder.iterdir())
    found = []
    for path in paths:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077 and not stat.S_ISLNK(mode):
            found.append(f"{path} (mode {stat.S_IMODE(mode):04o})")
    if found:
        report.problems.append(
            f"open to other users: {', '.join(found[:3])}{' ...' if found[3:] else ''}; it "
            "holds the members' shares (and the audit key), and the role refuses to start on "
            f"a held store others can read. Fix it with: chmod -R go-rwx {files.root}"
        )


def _read_held(path: Path, report: RoleReport, *, whole: bool) -> list[Row] | None:
    """The uploads' rows, read in one transaction (after the database's checks if
    `whole`, which also count the budget); None when it cannot be read."""
    try:
        db = connect_read_only(path)
    except sqlite3.Error as exc:
        report.problems.append(f"{path}: cannot be opened ({exc}); the role will not start")
        return None
    try:
        db.execute("BEGIN")
        if whole:
            found = [r[0] for r in db.execute("PRAGMA integrity_check")]
            if found != ["ok"]:
                report.problems += [f"{path.name} integrity: {r}" for r in found]
                report.problems.append(f"{path}: damaged, so the role will not start on it")
                return None
            layout = int(db.execute("PRAGMA user_version").fetchone()[0])
            if layout > LAYOUT:  # (its tables may not be the ones read below)
                report.problems.append(f"{newer_held(path, layout)}: check it with that blindmatch")
                report.held_not_read = "newer layout"
                return None
            for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check"):
                report.problems.append(f"{path}: {table} row {rowid} refers to a missing {parent}")
            _count_budget(db, path, report)
        return [(str(n), str(f), str(m)) for n, f, m in
                db.execute("SELECT name, file, meta FROM uploads ORDER BY id")]  # fmt: skip
    except sqlite3.DatabaseError as exc:
        report.problems.append(
            f"{path}: unreadable, not a role's held store ({exc}); the role will not start"
        )
        return None
    finally:
        db.close()


def _count_budget(db: sqlite3.Connection, path: Path, report: RoleReport) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for seq, a, b, size in db.execute(
        "SELECT s.seq, a.name, b.name, length(s.keys) FROM spent s LEFT JOIN uploads a ON "
        "a.id = s.upload_a LEFT JOIN uploads b ON b.id = s.upload_b"
    ):
        if size % 8:
            report.problems.append(
                f"{path}: spent row {seq} (pairs of {a!r} and {b!r}): {size} bytes, not whole "
                "8-byte pair keys; the role will not start"
            )
        report.pairs_spent += size // 8
    if "sealed" in tables:  # (a store from before backups were sealed has none)
        report.sealed = db.execute("SELECT COUNT(*) FROM sealed").fetchone()[0]
    if "queries" in tables:
        report.queries = db.execute("SELECT COUNT(*) FROM queries").fetchone()[0]


def upload_damage(folder: Path, file: str, name: str, meta_text: str, *, hashed: bool
                  ) -> str | None:  # fmt: skip
    """Why an upload's files would refuse the role's start (None: they would not)."""
    try:
        meta = json.loads(meta_text)
    except ValueError:
        return f"upload {name!r}: its metadata in the held store is not an arrays' layout"
    return damage(folder, file, name, meta, hashed=hashed)


def upload_files(file: str, meta_text: str) -> list[str]:
    """The names of the files of the upload stored as `file` (storage/role_files.py)."""
    try:
        return [f for f, _, _ in files_of(file, json.loads(meta_text))]
    except (ValueError, TypeError, KeyError):
        return [f"{file}.bin"]


def _check_uploads(
    files: RoleFiles, rows: list[Row], report: RoleReport, *, hash_files: bool
) -> None:
    suspects: list[tuple[Row, str]] = []
    for row in rows:
        name, file, meta_text = row
        reason = upload_damage(files.folder, file, name, meta_text, hashed=hash_files)
        if reason is None:
            report.uploads_checked += 1
            report.bytes_hashed += hash_files * sum(
                (files.folder / f).stat().st_size for f in upload_files(file, meta_text)
            )
        else:
            suspects.append((row, reason))
    named = {f for _, file, meta_text in rows for f in upload_files(file, meta_text)}
    listed = sorted(files.folder.iterdir()) if files.folder.is_dir() else []
    if not files.folder.is_dir():
        report.problems.append(f"{files.folder}: missing")
    unnamed = [p for p in listed if p.name not in named]
    if not suspects and not unnamed:
        return
    # Looked at after the files were: what the role changed meanwhile shows here.
    fresh = set(_read_held(files.held_db, report, whole=False) or [])
    for row, reason in suspects:
        if row in fresh:  # (else replaced or forgotten while we looked: not a problem)
            report.problems.append(
                f"{reason}; the role will not start on it: restore the data dir from a "
                "backup, or move the held store aside and have every member upload again"
            )
    now_named = {f for _, file, meta_text in fresh for f in upload_files(file, meta_text)}
    for path in unnamed:
        if path.name in now_named or not (path.exists() or path.is_symlink()):
            continue  # committed, or deleted, while we looked
        if path.is_file():
            report.repairs.append(
                f"{path}: no upload's row names it (an upload in flight, or cut short by a "
                "crash: deleted at the role's next start)"
            )
        else:
            report.problems.append(f"{path}: not an upload's file; nothing else belongs here")


def _check_audit(
    path: Path, key_file: Path, report: RoleReport, *, require_key: bool, held: list[Row],
    fresh: Callable[[], list[Row] | None],
) -> None:  # fmt: skip
    if not path.is_file():
        report.problems.append(
            f"{path}: missing; the role's audit log (its start makes a new, empty one: the "
            "entries before are lost, restore it from a backup)"
        )
        return
    try:
        db = connect_read_only(path)
    except sqlite3.Error as exc:
        report.problems.append(f"{path}: cannot be opened ({exc})")
        return
    try:
        db.execute("BEGIN")
        found = [r[0] for r in db.execute("PRAGMA integrity_check")]
        if found != ["ok"]:
            report.problems += [f"{path.name} integrity: {r}" for r in found]
            report.problems.append(f"{path}: damaged, so the role will not start on it")
            return
        report.audit_entries = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        report.problems += chain_problems(
            db, key_file, report.audit_entries, require_key=require_key,
            log=f"audit log {path}", who="the role", lister="blindmatch two-server verify-audit",
        )  # fmt: skip
        _check_logged(db, path, held, report, fresh)
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{path}: unreadable, not a role's audit log ({exc})")
    finally:
        db.close()


def _check_logged(
    db: sqlite3.Connection, path: Path, held: list[Row], report: RoleReport,
    fresh: Callable[[], list[Row] | None],
) -> None:  # fmt: skip
    """Every upload held has its `twoserver.upload` entry, with the SHA-256 stored with it
    (the role logs it before it commits the row, and the held rows were read before the log):
    an upload the log does not record means a log replaced or cut short at its end, which
    the chain alone does not show. A later entry of the same name with another SHA-256 is an
    upload logged and not stored (in flight, or cut short by a crash: never acknowledged),
    noted, not a problem. No upload held was forgotten after its entry (`twoserver.forget`:
    the role drops an upload before it logs that, so one still held in `fresh`, the rows
    read after the log, is held against the log's word: a held store older than its log)."""
    logged: dict[str, list[tuple[int, object]]] = {}
    forgot: dict[str, int] = {}
    for seq, action, member, detail_text in db.execute(
        "SELECT seq, action, member, detail FROM audit WHERE action IN "
        "('twoserver.upload', 'twoserver.forget') ORDER BY seq"
    ):
        try:
            detail = json.loads(detail_text)
        except ValueError:
            detail = None
        detail = detail if isinstance(detail, dict) else {}
        if action == "twoserver.upload":
            logged.setdefault(str(member), []).append((seq, detail.get("sha256")))
        else:
            forgot |= {str(n): seq for n in detail.get("names") or []}
    against: list[tuple[str, int, int]] = []
    for name, _, meta_text in held:
        try:
            digest = json.loads(meta_text).get("sha256")
        except (ValueError, AttributeError):
            continue  # (reported with the upload's file)
        entries = logged.get(name, [])
        at = max((seq for seq, d in entries if d == digest), default=None)
        if not entries:
            report.problems.append(
                f"audit log {path}: no `twoserver.upload` entry of upload {name!r}, which the "
                "held store holds: the log was replaced, or cut short at its end"
            )
        elif at is None:
            report.problems.append(
                f"audit log {path}: no `twoserver.upload` entry of upload {name!r} records the "
                "SHA-256 the held store has (its last records another)"
            )
        else:
            if entries[-1][0] > at:
                report.repairs.append(
                    f"audit log {path}: upload {name!r} logged again (entry {entries[-1][0]}) "
                    f"with another SHA-256, not held: the role holds the upload of entry {at} "
                    "(an upload in flight when the store was read, or cut short by a crash: "
                    "never acknowledged; or a held store copied before its log, by an "
                    "`admin backup` from before they were read together: the member uploads "
                    "again; nothing to repair)"
                )
            if forgot.get(name, 0) > at:
                against.append((name, at, forgot[name]))
    still = {n for n, _, _ in fresh() or []} if against else set()
    for name, at, seq in against:
        if name in still:  # (else dropped while we read: the forget was logged after)
            report.problems.append(
                f"audit log {path}: upload {name!r} (entry {at}) was forgotten at entry {seq} "
                "(`twoserver.forget`), yet the held store holds it: a held store older than "
                "its log (copied apart from it); a role started on it would hold an upload a "
                "member had erased"
            )


def _n(n: int, one: str, many: str = "") -> str:
    """`n` and its noun, singular for 1 (the counts as they were: no thousands separator)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
