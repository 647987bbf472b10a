"""Runs: queued over every member's current upload, then their progress and their links.

Results always come from the latest finished run of a project; a run's links replace the
links of every earlier run in the transaction that marks it done. A member's results are
read in one snapshot (`stored_results`), so a run that finishes meanwhile is either not
seen at all or seen whole: never the older run's header with its links already gone.
"""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import dataclass

import numpy as np

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.domain import QUEUED, Run, Upload
from blindmatch.matcher.errors import FailedPrecondition, NotFound
from blindmatch.matcher.storage.base import ACTIVE_SQL
from blindmatch.matcher.storage.project_store import ProjectStore
from blindmatch.matcher.storage.upload_store import UploadStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    work_done INTEGER NOT NULL DEFAULT 0,
    work_total INTEGER NOT NULL DEFAULT 0,
    groups INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    threshold REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_inputs (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    member TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS links (
    run_id TEXT NOT NULL,
    member TEXT NOT NULL,
    row INTEGER NOT NULL,
    partner TEXT NOT NULL,
    partner_row INTEGER NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS links_by_member ON links (run_id, member, row);
"""

_RUN_COLUMNS = (
    "id, project, state, stage, work_done, work_total, groups, message, threshold, "
    "tasks_done, tasks_total, created"
)
_UPLOAD_COLUMNS = "id, project, member, record_count, clk_bits, fingerprint, sha256"

# A link as a member reads it: (its row, partner, the partner's row, score).
LinkRow = tuple[int, str, int, float]


@dataclass(frozen=True)
class StoredResults:
    """What one finished run found for one member, read at one moment."""

    run: Run
    upload: Upload | None  # the member's upload the run used; None: the member erased it
    links: list[LinkRow]


def _run_in(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
    return Run(*row) if row else None


class RunStore(ProjectStore, UploadStore):
    def create_run(self, project: str, actor: str = audit.MATCHER) -> tuple[Run, bool]:
        """A new queued run over every member's current upload, or the active one.

        Returns (run, created).
        """
        with self.db.tx() as tx:
            active = tx.execute(
                f"SELECT id FROM runs WHERE project=? AND state IN {ACTIVE_SQL}",
                (project,),
            ).fetchone()
            if active:
                return self.run(active[0]), False
            proj = self.project(project)
            uploads = self.current_uploads(project)
            missing = [m for m in self.members(project) if m not in uploads]
            if missing:
                raise FailedPrecondition(
                    f"not every member has uploaded yet: waiting for {', '.join(missing)}"
                )
            empty = [m for m in sorted(uploads) if not uploads[m].record_count]
            if len(uploads) - len(empty) < 2:  # (a run would compare nothing: not "done")
                raise FailedPrecondition(
                    f"fewer than two members' uploads hold records ({', '.join(empty)}: 0 "
                    "records): a run would compare nothing. Upload the records to match "
                    "(`blindmatch upload`), then start the run"
                )
            seq = tx.execute("SELECT COUNT(*) FROM runs WHERE project=?", (project,)).fetchone()[0]
            run_id = f"{project}-run-{seq + 1}"
            tx.execute(
                "INSERT INTO runs (id, project, seq, state, threshold, created) "
                "VALUES (?,?,?,?,?,?)",
                (run_id, project, seq + 1, QUEUED, proj.threshold, self.clock()),
            )
            tx.executemany(
                "INSERT INTO run_inputs VALUES (?,?,?,?)",
                [(run_id, i, m, uploads[m].id) for i, m in enumerate(sorted(uploads))],
            )
            self.audit.append_in(
                tx, audit.Event(actor, "run.start", project, detail={"run_id": run_id})
            )
        return self.run(run_id), True

    def run(self, run_id: str) -> Run:
        with self.db.reading() as conn:
            found = _run_in(conn, run_id)
        if found is None:
            raise NotFound(f"no run {run_id!r}")
        return found

    def stored_results(self, project: str, member: str) -> StoredResults | None:
        """`member`'s links from the project's latest finished run (None: none finished
        yet), with the run and the member's upload it used, all read in one snapshot."""
        with self.db.snapshot() as conn:
            latest = conn.execute(
                "SELECT id FROM runs WHERE project=? AND state='done' ORDER BY seq DESC LIMIT 1",
                (project,),
            ).fetchone()
            run = _run_in(conn, latest[0]) if latest else None
            if run is None:
                return None
            upload = conn.execute(
                f"SELECT {', '.join('u.' + c for c in _UPLOAD_COLUMNS.split(', '))} "
                "FROM run_inputs ri JOIN uploads u ON u.id=ri.upload_id "
                "WHERE ri.run_id=? AND ri.member=?",
                (run.id, member),
            ).fetchone()
            links = conn.execute(_LINKS_SQL, (run.id, member)).fetchall()
        return StoredResults(run, Upload(*upload) if upload else None, links)

    def linked_rows(self, run_id: str, member: str) -> int:
        """How many of `member`'s rows a finished run linked to some partner (0 once a
        later run replaced its links)."""
        rows = self.db.query(
            "SELECT COUNT(DISTINCT row) FROM links WHERE run_id=? AND member=?", (run_id, member)
        )
        return int(rows[0][0])

    def latest_run(self, project: str) -> Run | None:
        rows = self.db.query(
            "SELECT id FROM runs WHERE project=? ORDER BY seq DESC LIMIT 1", (project,)
        )
        return self.run(rows[0][0]) if rows else None

    def run_inputs(self, run_id: str) -> list[tuple[str, Upload]]:
        rows = self.db.query(
            "SELECT member, upload_id FROM run_inputs WHERE run_id=? ORDER BY position", (run_id,)
        )
        return [(m, self.upload(u)) for m, u in rows]

    def update_run(self, run_id: str, **fields: object) -> bool:
        """Set a queued or running run's fields; False (nothing set) for one that is not
        (an erasure cancelled it, or its project expired)."""
        allowed = {
            "state", "stage", "work_done", "work_total", "tasks_done", "tasks_total", "groups",
            "message",
        }  # fmt: skip
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad run fields {sorted(fields)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.db.tx() as tx:
            done = tx.execute(
                f"UPDATE runs SET {sets} WHERE id=? AND state IN {ACTIVE_SQL}",
                (*fields.values(), run_id),
            )
            return done.rowcount > 0

    def finish_run(self, run_id: str, members: list[str], links: Links, groups: int) -> bool:
        """Store a run's links and mark it done, in one transaction; False (nothing stored)
        for a run no longer queued or running."""
        names = np.asarray(members, dtype=object)
        rows = zip(
            itertools.repeat(run_id),
            names[links.dset].tolist(),
            links.row.tolist(),
            names[links.partner].tolist(),
            links.partner_row.tolist(),
            links.score.tolist(),
        )
        with self.db.tx() as tx:
            found = tx.execute(
                f"SELECT project FROM runs WHERE id=? AND state IN {ACTIVE_SQL}", (run_id,)
            ).fetchone()
            if found is None:  # its project expired, or an erasure cancelled it, while it ran
                return False
            # Results always come from the latest finished run: older links are garbage.
            tx.execute(
                "DELETE FROM links WHERE run_id IN (SELECT id FROM runs WHERE project=?)",
                (found[0],),
            )
            tx.executemany("INSERT INTO links VALUES (?,?,?,?,?,?)", rows)
            tx.execute(
                "UPDATE runs SET state='done', stage='done', groups=? WHERE id=?",
                (groups, run_id),
            )
            self.audit.append_in(
                tx,
                audit.Event(
                    audit.MATCHER,
                    "run.done",
                    found[0],
                    detail={"run_id": run_id, "groups": groups, "links": len(links.row)},
                ),
            )
        self._collect_garbage()
        return True

    def fail_run(self, run_id: str, message: str, cause: str = "") -> None:
        """Mark a queued or running run failed (one already ended keeps its message).
        `cause`: what the operator's audit view keeps beside the members' `message` (the
        Dask cluster's failure whole: core/runwords.py), not shown to members."""
        with self.db.tx() as tx:
            found = tx.execute(
                f"SELECT project FROM runs WHERE id=? AND state IN {ACTIVE_SQL}", (run_id,)
            ).fetchone()
            if found is not None:
                tx.execute(
                    "UPDATE runs SET state='failed', message=? WHERE id=?", (message, run_id)
                )
                self.audit.append_in(
                    tx,
                    audit.Event(
                        audit.MATCHER,
                        "run.failed",
                        found[0],
                        detail={"run_id": run_id, "message": message}
                        | ({"cause": cause} if cause else {}),
                    ),
                )
        self._collect_garbage()

    def unfinished_runs(self) -> list[Run]:
        rows = self.db.query(f"SELECT id FROM runs WHERE state IN {ACTIVE_SQL} ORDER BY created")
        return [self.run(r[0]) for r in rows]


_LINKS_SQL = (
    "SELECT row, partner, partner_row, score FROM links WHERE run_id=? AND member=? "
    "ORDER BY row, partner"
)
