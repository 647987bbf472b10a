"""`blindmatch admin check`: is a data dir whole and consistent?

Reads the data dir without changing it (safe beside a running matcher) and
reports every problem found, not just the first:

- the SQLite database passes `PRAGMA integrity_check` and `foreign_key_check`;
- every CLK file the matcher still needs (each member's current upload, and
  the inputs of queued or running runs) is in `clks/`, with the size its row
  promises and the sha256 it was acknowledged with;
- no file in `clks/` is unreferenced (an orphan), and nothing in `clks/` is
  anything but `<upload id>.bin`;
- runs are consistent: known states, at most one active run per project,
  every run has its inputs, finished runs have links only between their own
  members, failed and active runs have none, progress never exceeds its total;
- uploads are consistent: at most one current upload per member, every
  upload's member exists, retry ids point at real uploads.

Files in `tmp/` are uploads in flight (or cut short by a crash, removed at the
next start-up); they are counted, not treated as problems.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.domain import ACTIVE, DONE, RUN_STATES
from blindmatch.matcher.storage.datadir import DataDir, upload_id_of
from blindmatch.matcher.storage.sqlite import connect_read_only
from blindmatch.matcher.storage.upload_store import needed_uploads


@dataclass
class IntegrityReport:
    """What `check_data_dir` found: problems (must be none) and what it looked at."""

    data_dir: Path
    problems: list[str] = field(default_factory=list)
    projects: int = 0
    uploads_checked: int = 0
    bytes_hashed: int = 0
    runs: int = 0
    in_flight: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        head = (
            f"{self.data_dir}: {self.projects} projects, {self.uploads_checked} stored uploads "
            f"verified ({self.bytes_hashed} bytes hashed), {self.runs} runs, "
            f"{self.in_flight} uploads in flight in tmp/"
        )
        if self.ok:
            return f"{head}\nOK: no problems found"
        lines = [head, f"FAILED: {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_data_dir(data_dir: str | Path, *, hash_files: bool = True) -> IntegrityReport:
    """Check a data dir; never modifies it."""
    files = DataDir(Path(data_dir))
    report = IntegrityReport(files.root)
    db_path = files.db
    if not db_path.is_file():
        report.problems.append(f"{db_path}: missing; is it a blindmatch data dir?")
        return report
    try:
        db = connect_read_only(db_path)
    except sqlite3.Error as exc:
        report.problems.append(f"{db_path}: cannot open ({exc})")
        return report
    try:
        db.execute("BEGIN")  # one consistent snapshot for every query below
        _check_database(db, report)
        if not report.problems:
            _check_uploads(db, files, report, hash_files=hash_files)
            _check_runs(db, report)
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{db_path}: unreadable ({exc})")
    finally:
        db.close()
    tmp = files.tmp
    report.in_flight = sum(1 for _ in tmp.iterdir()) if tmp.is_dir() else 0
    return report


def _check_database(db: sqlite3.Connection, report: IntegrityReport) -> None:
    rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        report.problems += [f"database integrity: {r}" for r in rows]
    for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check"):
        report.problems.append(f"database: {table} row {rowid} refers to a missing {parent}")
    report.projects = db.execute("SELECT COUNT(*) FROM projects").fetchone()[0]


def _check_uploads(
    db: sqlite3.Connection, files: DataDir, report: IntegrityReport, *, hash_files: bool
) -> None:
    clk_dir = files.clks
    needed = needed_uploads(db)
    for upload_id, count, bits, sha256 in db.execute(
        "SELECT id, record_count, clk_bits, sha256 FROM uploads ORDER BY created"
    ):
        if upload_id not in needed:
            continue
        path = files.clk_file(upload_id)
        expected = count * (bits // 8)
        if not path.is_file():
            report.problems.append(f"upload {upload_id}: its CLK file {path} is missing")
            continue
        size = path.stat().st_size
        if size != expected:
            report.problems.append(
                f"upload {upload_id}: {path} is {size} bytes, expected {expected} "
                f"({count} CLKs of {bits} bits)"
            )
            continue
        if hash_files:
            actual = _sha256_of(path)
            report.bytes_hashed += size
            if actual != sha256:
                report.problems.append(
                    f"upload {upload_id}: {path} has sha256 {actual[:16]}..., "
                    f"acknowledged as {sha256[:16]}..."
                )
                continue
        report.uploads_checked += 1
    if clk_dir.is_dir():
        for path in sorted(clk_dir.iterdir()):
            upload_id = upload_id_of(path)
            if upload_id is None:
                report.problems.append(f"{path}: not an upload file; nothing should be here")
            elif upload_id not in needed:
                report.problems.append(
                    f"{path}: orphan (no current upload or active run refers to it)"
                )
    else:
        report.problems.append(f"{clk_dir}: missing")
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


def _check_runs(db: sqlite3.Connection, report: IntegrityReport) -> None:
    runs = db.execute(
        "SELECT id, project, state, stage, work_done, work_total FROM runs ORDER BY created"
    ).fetchall()
    report.runs = len(runs)
    active: dict[str, list[str]] = {}
    for run_id, project, state, stage, done, total in runs:
        if state not in RUN_STATES:
            report.problems.append(f"run {run_id}: unknown state {state!r}")
        if state in ACTIVE:
            active.setdefault(project, []).append(run_id)
        if state == DONE and stage != DONE:
            report.problems.append(f"run {run_id}: done, but its stage is {stage!r}")
        if total and done > total:
            report.problems.append(f"run {run_id}: progress {done} of only {total}")
        inputs = db.execute(
            "SELECT ri.member, ri.upload_id, u.id FROM run_inputs ri "
            "LEFT JOIN uploads u ON u.id=ri.upload_id WHERE ri.run_id=?",
            (run_id,),
        ).fetchall()
        if len(inputs) < 2:
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
