"""`blindmatch admin check`: is a data dir whole and consistent?

Reads the data dir without changing it (safe beside a running matcher, under load) and
reports every problem found, not just the first:

- the store and index.sqlite are of layouts this blindmatch knows (project_store.py and
  index_store.py `LAYOUT`; one a newer blindmatch wrote is named, and read no further);
- both databases (`blindmatch.sqlite`, `index.sqlite`) pass `PRAGMA integrity_check`,
  and the first `foreign_key_check`;
- the audit key is there (or given), and the whole audit chain verifies with it;
- every CLK file the matcher still needs (each member's current upload, and the inputs
  of queued or running runs) is in `clks/`, with the size its row promises and the
  sha256 it was acknowledged with (the same check runs make: `upload_damage`); nothing in
  `clks/` is anything but `<upload id>.bin`;
- runs are consistent: known states, at most one active run per project, every run has
  its inputs (fewer than two only after a member erased its data), finished runs have
  links only between their own members, failed and active runs have none, progress never
  exceeds its total;
- uploads are consistent: at most one current upload per member, every upload's member
  exists, retry ids point at real uploads;
- standing indexes are consistent: every indexed record belongs to an index with an
  encoding, and has that encoding's length; and they agree with the audit log
  (index_audit.py): every change stored in `index.sqlite` has its `index.change` entry,
  each member's index holds the records its last change's entry says, and every change the
  log records as done is stored;
- every erasure and expiry deleted all it had to (erasure_check.py): an erased member's
  standing index or upload files still there, or an expired project's indexes, are
  problems (the matcher stopped part-way; its next start completes them).

What a start-up repairs by itself is reported apart, as *will be repaired*, not as a
problem: files in `tmp/` (uploads in flight, or cut short), CLK files nothing refers to
(deleted by the garbage collection), runs left queued or running (resumed from the start),
index changes announced in the audit log but not stored (voided).

A running matcher changes the data dir while the check reads it. The rows are read in one
snapshot; a file found missing, or found in `clks/` without a row, is judged again against
a fresh snapshot taken after the file was looked at, so an upload committed or replaced
meanwhile is never reported missing or orphaned.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from blindmatch.matcher.domain import ACTIVE, DONE, RUN_STATES, Upload, counted
from blindmatch.matcher.storage import index_store, project_store
from blindmatch.matcher.storage.audit_log import chain_problems
from blindmatch.matcher.storage.datadir import DataDir, upload_id_of
from blindmatch.matcher.storage.erasure_check import check_erasures, read_erasures
from blindmatch.matcher.storage.index_audit import check_index_audit
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found, wal_notes
from blindmatch.matcher.storage.sqlite import newer_layout, newer_store
from blindmatch.matcher.storage.upload_store import needed_uploads, upload_damage

T = TypeVar("T")
_UPLOADS_SQL = (
    "SELECT id, project, member, record_count, clk_bits, fingerprint, sha256 FROM uploads"
)


@dataclass
class IntegrityReport:
    """What `check_data_dir` found: problems (must be none), what the next start-up
    repairs by itself, and what it looked at."""

    data_dir: Path
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    projects: int = 0
    uploads_checked: int = 0
    bytes_hashed: int = 0
    runs: int = 0
    in_flight: int = 0
    index_records: int = 0
    audit_entries: int = 0
    not_read: str | None = None  # why nothing was read (so no counts are said): below

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        if self.not_read is not None:  # (its counts, all 0, were never read: opsleft)
            return render_findings(
                f"{self.data_dir}: not read ({self.not_read})", "the matcher", [], self.problems
            )
        head = (
            f"{self.data_dir}: {self.projects} projects, {self.uploads_checked} stored uploads "
            f"verified ({self.bytes_hashed} bytes hashed), {self.runs} runs, "
            f"{self.index_records} indexed records, {self.audit_entries} audit entries, "
            f"{self.in_flight} uploads in flight in tmp/"
        )
        return render_findings(head, "the matcher", self.repairs, self.problems)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "will_be_repaired": self.repairs,
            "not_read": self.not_read,
            "projects": self.projects,
            "uploads_checked": self.uploads_checked,
            "bytes_hashed": self.bytes_hashed,
            "runs": self.runs,
            "in_flight": self.in_flight,
            "index_records": self.index_records,
            "audit_entries": self.audit_entries,
        }


@dataclass
class _Snapshot:
    """The rows of blindmatch.sqlite the file checks need, read at one moment."""

    needed: set[str]
    uploads: dict[str, Upload]


def newer_store_in(files: DataDir) -> str | None:
    """What is said of the data dir's store or index.sqlite where one is of a layout this
    blindmatch does not know (a newer one wrote it: project_store.py and index_store.py
    `LAYOUT`), else None; read without changing the folder (sqlite.py `layout_of`)."""
    for db, known in ((files.db, project_store.LAYOUT), (files.index_db, index_store.LAYOUT)):
        found = newer_layout(db, known) if db.is_file() else None
        if found is not None:
            return newer_store(db, found, known)
    return None


def check_data_dir(
    data_dir: str | Path,
    *,
    hash_files: bool = True,
    audit_key_file: str | Path | None = None,
    require_key: bool = True,
    in_backup: bool = False,
) -> IntegrityReport:
    """Check a data dir; never modifies it. `audit_key_file`: where the audit key is kept,
    if not in the data dir (`serve --audit-key`); without `require_key`, a key found
    nowhere skips the chain's check instead of failing (a backup, whose key is kept apart).
    `in_backup`: the copy `admin backup` is making, of a data dir an erasure was cut short
    in: what it left is listed as a repair (the restored matcher completes it at its start),
    and the backup is made; `admin check` on the restored dir names it as a problem. Nothing
    is left beside the databases either: a stopped matcher's are read as immutable, a
    serving one's through their WAL (quietread.py `left_as_found`)."""
    files = DataDir(Path(data_dir))
    return left_as_found(
        [files.db, files.index_db],
        lambda: _check(files, hash_files, audit_key_file, require_key, in_backup),
    )


def _check(
    files: DataDir,
    hash_files: bool,
    audit_key_file: str | Path | None,
    require_key: bool,
    in_backup: bool,
) -> IntegrityReport:
    report = IntegrityReport(files.root)
    if not files.db.is_file():
        report.problems.append(
            f"{files.db}: missing; is it a blindmatch data dir? (a two-server role's "
            "holds twoserver-ROLE-held.sqlite)"
        )
        report.not_read = "no blindmatch.sqlite"
        return report
    newer = newer_store_in(files)
    if newer is not None:  # (its tables may not be the ones read below)
        report.problems.append(f"{newer}: check it with that blindmatch")
        report.not_read = "newer layout"
        return report
    open_to_others = files.open_to_others()
    if open_to_others:
        report.problems.append(
            f"{files.root} is open to other users ({', '.join(open_to_others[:3])}"
            f"{' ...' if open_to_others[3:] else ''}), so the matcher refuses to start on it; "
            f"fix it with: chmod -R go-rwx {files.root}"
        )
    key_file = Path(audit_key_file) if audit_key_file else files.audit_key
    snapshot = _read(
        files.db, report, lambda db: _check_main(db, report, key_file, require_key), whole=True
    )
    # What erasures and expiries left, read before the files are hashed and again at the end.
    erasures = read_erasures(files) if snapshot is not None else None
    if snapshot is not None:
        _check_files(files, snapshot, report, hash_files=hash_files)
    if files.index_db.is_file():
        indexed = _read(files.index_db, report, lambda db: _check_index(db, report), whole=True)
        if snapshot is not None:
            _read(files.db, report, lambda db: _check_announced(db, files, report))
        if snapshot is not None and indexed is not None:
            try:
                report.problems += check_index_audit(files.db, files.index_db)
            except sqlite3.DatabaseError as exc:
                report.problems.append(f"{files.index_db}: unreadable ({exc})")
    if snapshot is not None:  # an erasure or expiry cut short: data that should be gone
        # (A backup's staging copy is written by no process: nothing there can finish.)
        problems, repairs = check_erasures(files, erasures, grace=0.0 if in_backup else None)
        report.problems += [] if in_backup else problems
        report.repairs += repairs + (problems if in_backup else [])
        _read(files.db, report, lambda db: _past_expiry(db, report))
    tmp = files.tmp
    report.in_flight = sum(1 for _ in tmp.iterdir()) if tmp.is_dir() else 0
    if report.in_flight:
        report.repairs.append(
            f"{tmp}: {counted(report.in_flight, 'file')} of uploads in flight, or cut short by a "
            "crash (emptied at start-up)"
        )
    report.repairs += wal_notes([files.db, files.index_db])  # (a stopped matcher's, killed)
    return report


def _read(
    path: Path,
    report: IntegrityReport,
    check: Callable[[sqlite3.Connection], T],
    *,
    whole: bool = False,
) -> T | None:
    """`check` over one read transaction of the database at `path`, after `PRAGMA
    integrity_check` if `whole` (None: unreadable, or damaged)."""
    try:
        db = connect_read_only(path)
    except sqlite3.Error as exc:
        report.problems.append(f"{path}: cannot open ({exc})")
        return None
    try:
        db.execute("BEGIN")  # one consistent snapshot for every query of `check`
        rows = [r[0] for r in db.execute("PRAGMA integrity_check")] if whole else ["ok"]
        if rows != ["ok"]:
            report.problems += [f"{path.name} integrity: {r}" for r in rows]
            report.problems.append(
                f"{path}: damaged, so the matcher refuses to start on it; restore the data "
                "dir from a backup (docs/operations.md, Recovery)"
            )
            return None
        return check(db)
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{path}: unreadable ({exc}); restore it from a backup")
        return None
    finally:
        db.close()


def _past_expiry(db: sqlite3.Connection, report: IntegrityReport) -> None:
    """Projects past their expiry whose data the matcher has not deleted yet (it was down at
    the moment, or its sweep, every minute, is to come): repairs, saying when and what."""
    if "expires" not in {r[1] for r in db.execute("PRAGMA table_info(projects)")}:
        return
    for name, expires, uploads in db.execute(
        "SELECT p.name, p.expires, (SELECT COUNT(*) FROM uploads u WHERE u.project=p.name) "
        "FROM projects p WHERE p.erased IS NULL AND p.expires <= ? ORDER BY p.name",
        (time.time(),),
    ):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        report.repairs.append(
            f"project {name} expired at {when}, but its data ({counted(uploads, 'upload')}, "
            "its runs and results) is still in the data dir: the matcher deletes it at its "
            "next start, or within a minute while it serves"
        )


def _check_main(
    db: sqlite3.Connection, report: IntegrityReport, key_file: Path, require_key: bool
) -> _Snapshot:
    for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check"):
        report.problems.append(f"database: {table} row {rowid} refers to a missing {parent}")
    report.projects = db.execute("SELECT COUNT(*) FROM projects").fetchone()[0]
    _check_audit(db, report, key_file, require_key)
    _check_upload_rows(db, report)
    _check_runs(db, report)
    return _Snapshot(needed_uploads(db), {r[0]: Upload(*r) for r in db.execute(_UPLOADS_SQL)})


def _check_audit(
    db: sqlite3.Connection, report: IntegrityReport, key_file: Path, require_key: bool
) -> None:
    report.audit_entries = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    report.problems += chain_problems(
        db, key_file, report.audit_entries, require_key=require_key, log="audit log",
        who="the matcher", lister="blindmatch audit verify",
    )  # fmt: skip


def _check_upload_rows(db: sqlite3.Connection, report: IntegrityReport) -> None:
    for project, member, n in db.execute(
        "SELECT project, member, COUNT(*) FROM uploads WHERE current=1 "
        "GROUP BY project, member HAVING COUNT(*) > 1"
    ):
        report.problems.append(f"{project}/{member}: {n} current uploads, expected one")
    for upload_id, project, member in db.execute(
        "SELECT u.id, u.project, u.member FROM uploads u LEFT JOIN members m "
        "ON m.project=u.project AND m.name=u.member WHERE m.name IS NULL"
    ):
        report.problems.append(f"upload {upload_id}: member {project}/{member} does not exist")
    for project, member, key in db.execute(
        "SELECT k.project, k.member, k.client_upload_id FROM upload_keys k "
        "LEFT JOIN uploads u ON u.id=k.upload_id "
        "WHERE u.id IS NULL OR u.project!=k.project OR u.member!=k.member"
    ):
        report.problems.append(
            f"{project}/{member}: retry id {key!r} points at an upload that is not theirs "
            "or does not exist"
        )


def _check_files(
    files: DataDir, snapshot: _Snapshot, report: IntegrityReport, *, hash_files: bool
) -> None:
    """Every needed file whole; nothing else in `clks/` but unreferenced upload files
    (judged again against a fresh snapshot before anything is called missing or orphan)."""
    suspects: list[tuple[Upload, str]] = []
    for upload_id in sorted(snapshot.needed):
        upload = snapshot.uploads.get(upload_id)
        if upload is None:
            continue  # a run's input without a row: _check_runs reports it
        path = files.clk_file(upload_id)
        reason = upload_damage(path, upload, hashed=hash_files)
        if reason is None:
            report.uploads_checked += 1
            report.bytes_hashed += upload.record_count * (upload.clk_bits // 8) * hash_files
        else:
            suspects.append((upload, reason))
    listed = sorted(files.clks.iterdir()) if files.clks.is_dir() else []
    if not files.clks.is_dir():
        report.problems.append(f"{files.clks}: missing")
    unreferenced = []
    for path in listed:
        listed_id = upload_id_of(path)
        if listed_id is None:
            if path.exists() or path.is_symlink():  # (else collected while we looked)
                report.problems.append(f"{path}: not an upload file; nothing should be here")
        elif listed_id not in snapshot.needed:
            unreferenced.append(path)
    if not suspects and not unreferenced:
        return
    # Looked at after the files were: what changed since the first snapshot shows here.
    fresh = _read(files.db, report, needed_uploads) or set()
    for upload, reason in suspects:
        if upload.id not in fresh:
            continue  # replaced (and its file collected) while we looked: not a problem
        report.problems.append(
            f"upload {upload.id} of {upload.project}/{upload.member}: {reason} "
            f"({files.clk_file(upload.id)}); runs refuse it: {upload.member} must upload again"
        )
    for path in unreferenced:
        if path.stem in fresh or not path.exists():
            continue  # committed, or collected, while we looked
        report.repairs.append(
            f"{path}: no current upload or active run refers to it (deleted by the matcher's "
            "garbage collection, at the next start-up at the latest)"
        )


def _check_runs(db: sqlite3.Connection, report: IntegrityReport) -> None:
    runs = db.execute(
        "SELECT id, project, state, stage, work_done, work_total, created FROM runs "
        "ORDER BY created"
    ).fetchall()
    report.runs = len(runs)
    erased = dict(
        db.execute("SELECT project, MAX(time) FROM audit WHERE action='erase' GROUP BY project")
    )
    active: dict[str, list[str]] = {}
    for run_id, project, state, stage, done, total, created in runs:
        if state not in RUN_STATES:
            report.problems.append(f"run {run_id}: unknown state {state!r}")
        if state in ACTIVE:
            active.setdefault(project, []).append(run_id)
            report.repairs.append(
                f"run {run_id}: {state} (the matcher runs it; if it had stopped, it resumes "
                "the run from the start when it starts)"
            )
        if state == DONE and stage != DONE:
            report.problems.append(f"run {run_id}: done, but its stage is {stage!r}")
        if total and done > total:
            report.problems.append(f"run {run_id}: progress {done} of only {total}")
        inputs = db.execute(
            "SELECT ri.member, ri.upload_id, u.id FROM run_inputs ri "
            "LEFT JOIN uploads u ON u.id=ri.upload_id WHERE ri.run_id=?",
            (run_id,),
        ).fetchall()
        # A member's erasure takes its inputs out of its project's finished runs.
        erased_since = state not in ACTIVE and erased.get(project, -1.0) >= created
        if len(inputs) < 2 and not erased_since:
            report.problems.append(f"run {run_id}: {len(inputs)} inputs, a run needs two or more")
        for member, upload_id, found in inputs:
            if found is None:
                report.problems.append(
                    f"run {run_id}: input of {member} is upload {upload_id}, which does not exist"
                )
        members = {m for m, _, _ in inputs}
        links = db.execute("SELECT COUNT(*) FROM links WHERE run_id=?", (run_id,)).fetchone()[0]
        if state != DONE and links:
            report.problems.append(f"run {run_id}: {state}, yet it has {links} stored links")
        if state == DONE and links:
            strays = db.execute(
                "SELECT DISTINCT member, partner FROM links WHERE run_id=?", (run_id,)
            ).fetchall()
            for member, partner in strays:
                if member not in members or partner not in members:
                    report.problems.append(
                        f"run {run_id}: a link between {member} and {partner}, "
                        "who are not both in the run"
                    )
    for project, ids in active.items():
        if len(ids) > 1:
            report.problems.append(f"project {project}: {len(ids)} active runs ({', '.join(ids)})")
    for (run_id,) in db.execute(
        "SELECT DISTINCT run_id FROM links WHERE run_id NOT IN (SELECT id FROM runs)"
    ):
        report.problems.append(f"links stored for run {run_id}, which does not exist")


def _check_index(db: sqlite3.Connection, report: IntegrityReport) -> bool:
    report.index_records = db.execute("SELECT COUNT(*) FROM index_records").fetchone()[0]
    for project, member, n in db.execute(
        "SELECT r.project, r.member, COUNT(*) FROM index_records r LEFT JOIN index_meta m "
        "ON m.project=r.project AND m.member=r.member WHERE m.member IS NULL "
        "GROUP BY r.project, r.member"
    ):
        report.problems.append(
            f"index of {project}/{member}: {n} records but no encoding (index_meta)"
        )
    for project, member, bits, n in db.execute(
        "SELECT r.project, r.member, m.clk_bits, COUNT(*) FROM index_records r "
        "JOIN index_meta m ON m.project=r.project AND m.member=r.member "
        "WHERE length(r.clk) * 8 != m.clk_bits GROUP BY r.project, r.member"
    ):
        report.problems.append(
            f"index of {project}/{member}: {n} records are not {bits}-bit CLKs like the rest"
        )
    return True


def _check_announced(db: sqlite3.Connection, files: DataDir, report: IntegrityReport) -> None:
    """Index changes announced in the audit log: stored, or (cut short) voided at start-up.
    index.sqlite is read after the announcements, so a change stored meanwhile counts."""
    announced = db.execute("SELECT seq, project, member, change_id FROM audit_intents").fetchall()
    if not announced:
        return
    index = connect_read_only(files.index_db)
    try:
        for seq, project, member, change_id in announced:
            stored = index.execute(
                "SELECT 1 FROM index_changes WHERE project=? AND member=? AND change_id=? "
                "AND audit_seq=?",
                (project, member, change_id, seq),
            ).fetchone()
            if stored is None:
                report.repairs.append(
                    f"index change {change_id} of {project}/{member} (audit entry {seq}): "
                    "announced, not stored (in flight, or cut short by a crash: start-up "
                    "records it void in the audit log)"
                )
    finally:
        index.close()


def render_findings(head: str, repairer: str, repairs: list[str], problems: list[str]) -> str:
    """A check's report: its summary line, what `repairer` fixes at its next start, then OK
    or each problem (`admin check` on a matcher's data dir and on a two-server role's)."""
    lines = [head]
    if repairs:
        lines.append(f"will be repaired by {repairer} ({len(repairs)}; not problems):")
        lines += [f"  - {r}" for r in repairs]
    if problems:
        lines.append(f"FAILED: {counted(len(problems), 'problem')}:")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("OK: no problems found")
    return "\n".join(lines)
