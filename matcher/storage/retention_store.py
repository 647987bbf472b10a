"""Deletion: a member's erasure, and the expiry of whole projects (request references too).

Deletion is real: files are unlinked, rows deleted with `secure_delete` on (freed pages
are zeroed) and the WAL checkpointed and truncated, so the bytes are gone from the data
dir, not flagged. The named users' rows (officers' names) go too. The audit log keeps the
fact and the counts, never the data; its earlier entries stay as they are, user names
included (s.62 logs must say who consulted or disclosed).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.runwords import ERASED_DURING_RUN
from blindmatch.matcher.domain import Erasure
from blindmatch.matcher.storage.base import ACTIVE_SQL
from blindmatch.matcher.storage.crashpoint import crash_point
from blindmatch.matcher.storage.project_store import ProjectStore
from blindmatch.matcher.storage.upload_store import UploadStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS erasure_intents (
    seq INTEGER PRIMARY KEY,       -- the `erase` entry of an erasure not known complete
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    uploads TEXT NOT NULL          -- JSON: the upload ids whose CLK files it deletes
);
"""
log = logging.getLogger("blindmatch.matcher")

COMPLETED = "erase.complete"
CUT_SHORT = (
    "the matcher stopped after this erasure was logged, before all of the member's data was "
    "deleted; start-up deleted what was left"
)

# What every member is told of a run an erasure cancelled (its status and its `run.failed`
# entry): that it must run again, not that a partner erased (docs/security.md, the member's
# view; privtests2: it said "a member erased its data"). The operator's entry says so
# (`erased_by`, withheld from members: core/audit.py); the erasing member's own `erase` entry
# names the runs it cancelled (`runs_cancelled`).
# (core/runwords.py: the same words for such runs from before, where a member reads them.)


@dataclass(frozen=True)
class CutShort:
    """An erasure logged but not known complete: its `erase` entry, member and uploads."""

    seq: int
    project: str
    member: str
    uploads: tuple[str, ...]


class RetentionStore(ProjectStore, UploadStore):
    # Upload files of erasures cut short still in clks/ when the store opened (before the
    # garbage collection deleted them): what `complete_erasure` reports as left.
    files_left_at_start: frozenset[str] = frozenset()
    # Every upload file in clks/ no row referred to then (storage/erasure_log.py).
    unreferenced_at_start: frozenset[str] = frozenset()

    def erase_member(
        self,
        project: str,
        member: str,
        then: Callable[[], object] | None = None,
        replay_of: Mapping[str, object] | None = None,
    ) -> Erasure:
        """Delete `member`'s uploads and every link that involves its rows, now.

        Erasure wins over runs: a run of the project that is queued or running is cancelled
        in the same transaction (failed, with `ERASED_DURING_RUN`; `finish_run` then stores
        nothing of it), so a member starting runs in a loop cannot hold an erasure off.
        `then` runs inside the transaction once the erasure goes ahead (to end the member's
        streams, so that none commits after it).
        `replay_of`: the entry of a replaced data dir's log this erasure replays (`admin
        restore --previous`, usecases/restore.py): its `erase` entry is the operator's, saying
        so.

        The erasure's intent is kept beside its `erase` entry until the caller has deleted
        the rest (`erasure_done`): the member's standing index, in another database. One
        the matcher stopped before finishing (a crash) is completed at its next start
        (`cut_short_erasures`, `complete_erasure`; usecases/erasure.py).
        """
        with self.db.tx() as tx:
            self.project(project)
            self._require_member(tx, project, member)
            cancelled = [
                r[0]
                for r in tx.execute(
                    f"SELECT id FROM runs WHERE project=? AND state IN {ACTIVE_SQL}", (project,)
                )
            ]
            for run_id in cancelled:
                tx.execute(
                    "UPDATE runs SET state='failed', message=? WHERE id=?",
                    (ERASED_DURING_RUN, run_id),
                )
                self.audit.append_in(
                    tx,
                    audit.Event(
                        audit.MATCHER,
                        "run.failed",
                        project,
                        detail={
                            "run_id": run_id,
                            "message": ERASED_DURING_RUN,
                            "erased_by": member,
                        },
                    ),
                )
            if then is not None:
                then()
            runs = "SELECT id FROM runs WHERE project=?"
            links = tx.execute(
                f"DELETE FROM links WHERE run_id IN ({runs}) AND (member=? OR partner=?)",
                (project, member, member),
            ).rowcount
            tx.execute(
                f"DELETE FROM run_inputs WHERE run_id IN ({runs}) AND member=?", (project, member)
            )
            tx.execute(  # they point at its rows, or were issued from them
                "DELETE FROM request_refs WHERE project=? AND (requester=? OR partner=?)",
                (project, member, member),
            )
            uploads = self._forget_uploads(tx, project, member)
            users = self.delete_users_in(tx, project, member)  # their tokens stop working
            detail: dict[str, object] = {"uploads": len(uploads), "links": links}
            if cancelled:
                detail["runs_cancelled"] = cancelled
            if users:
                detail["users"] = users
            if replay_of is not None:
                detail["replay_of"] = dict(replay_of)
            actor = member if replay_of is None else audit.OPERATOR
            (entry,) = self.audit.append_in(
                tx, audit.Event(actor, "erase", project, member, detail=detail)
            )
            tx.execute(
                "INSERT INTO erasure_intents VALUES (?,?,?,?)",
                (entry.seq, project, member, json.dumps(uploads)),
            )
        crash_point("erase.logged")
        pending: tuple[str, ...] = ()
        try:
            self._unlink_uploads(uploads)
            self._collect_garbage()
            self.db.checkpoint()
        except Exception as exc:  # a full disk, say: logged, its intent kept, retried
            log.exception("%s/%s: the erasure's upload files could not be deleted", project, member)
            pending = (
                f"its upload files and the database's old pages are not deleted yet ({exc})",
            )
        return Erasure(len(uploads), links, users, audit_seq=entry.seq, pending=pending)

    def erasure_done(self, project: str, member: str, seq: int) -> None:
        """The member's erasure logged as entry `seq` deleted everything: forget its intent
        (and any earlier one of the member's, left by an erasure that failed part-way and
        was asked again: this one deleted what it left)."""
        with self.db.tx() as tx:
            tx.execute(
                "DELETE FROM erasure_intents WHERE project=? AND member=? AND seq<=?",
                (project, member, seq),
            )

    def keep_intent(self, cut: CutShort) -> None:
        """Record an intent for an erasure that has none (found from the audit log) but that
        cannot be completed yet (S1 or S2 down): its upload files unlinked now, the intent
        kept until it is (the retry, or the next start)."""
        with self.db.tx() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO erasure_intents VALUES (?,?,?,?)",
                (cut.seq, cut.project, cut.member, json.dumps(list(cut.uploads))),
            )
        self._unlink_uploads(list(cut.uploads))
        self.db.checkpoint()

    def last_erasures(self) -> dict[tuple[str, str], float]:
        """(project, member) -> the time of its last `erase` entry."""
        return {
            (p, m): float(t)
            for p, m, t in self.db.query(
                "SELECT project, member, MAX(time) FROM audit WHERE action='erase' "
                "GROUP BY project, member"
            )
        }

    def erased_at(self, seq: int) -> float:
        """The time of the `erase` entry `seq`."""
        return float(self.db.query("SELECT time FROM audit WHERE seq=?", (seq,))[0][0])

    def intent(self, seq: int) -> CutShort | None:
        """The erasure intent of the `erase` entry `seq`; None once it is complete."""
        rows = self.db.query(
            "SELECT seq, project, member, uploads FROM erasure_intents WHERE seq=?", (seq,)
        )
        return (
            CutShort(rows[0][0], rows[0][1], rows[0][2], tuple(json.loads(rows[0][3])))
            if rows
            else None
        )

    def cut_short_erasures(self) -> list[CutShort]:
        """Erasures logged but not known complete (the matcher stopped part-way)."""
        return [
            CutShort(seq, project, member, tuple(json.loads(uploads)))
            for seq, project, member, uploads in self.db.query(
                "SELECT seq, project, member, uploads FROM erasure_intents ORDER BY seq"
            )
        ]

    def complete_erasure(
        self,
        cut: CutShort,
        index_records: int,
        more: dict[str, object] | None = None,
        why: str = CUT_SHORT,
    ) -> dict[str, object]:
        """Finish an erasure cut short, once the caller has deleted its standing index
        (`index_records` records were left there): its upload files unlinked, the log
        checkpointed, and an `erase.complete` entry saying what was left (and `more`, and
        `why`), in the transaction that forgets its intent (if it has one: one found from
        the audit log has none). The entry's detail."""
        at_start = self.files_left_at_start | self.unreferenced_at_start
        files = [u for u in cut.uploads if u in at_start or self.files.clk_file(u).exists()]
        self._unlink_uploads(list(cut.uploads))
        detail: dict[str, object] = {
            "erased": cut.seq,
            "index_records": index_records,
            "upload_files": len(files),
            **(more or {}),
            "why": why,
        }
        with self.db.tx() as tx:
            self.audit.append_in(
                tx, audit.Event(audit.MATCHER, COMPLETED, cut.project, cut.member, detail=detail)
            )
            tx.execute("DELETE FROM erasure_intents WHERE seq=?", (cut.seq,))
        self.db.checkpoint()  # (the erasure's own may not have run)
        return detail

    def expired_projects(self) -> list[str]:
        rows = self.db.query(
            "SELECT name FROM projects WHERE erased IS NULL AND expires <= ? ORDER BY name",
            (self.clock(),),
        )
        return [r[0] for r in rows]

    def expire_projects(
        self,
        replays: Mapping[str, Mapping[str, object]] | None = None,
        ending: Mapping[str, str] | None = None,
        told: dict[str, dict[str, object]] | None = None,
    ) -> list[str]:
        """Delete every expired project's encodings and results; returns their names.
        `replays`: by project, the `project.expire` entry of a replaced data dir's log that
        its expiry replays (`admin restore --previous`: its entry says so).
        `ending`: by project, the operator's reason for ending it now, before its date
        (`admin end-project`, usecases/retention.py `Sweeper.end`): it expires with the
        others, its date set to now in the same transaction, its entry saying so (a name
        not live is skipped). `told`, if given, gets each expired project's entry detail,
        with its `seq`.

        The project's name, members and token hashes stay (so a late caller is
        told it expired, and the name is not reused); its uploads, runs,
        links, request references and named users go, rows and files.
        """
        done = []
        ending = ending or {}
        for name in sorted(set(self.expired_projects()) | set(ending)):
            with self.db.tx() as tx:
                if name in ending and not self._end_now(tx, name):
                    continue
                runs = "SELECT id FROM runs WHERE project=?"
                links = tx.execute(f"DELETE FROM links WHERE run_id IN ({runs})", (name,)).rowcount
                tx.execute(f"DELETE FROM run_inputs WHERE run_id IN ({runs})", (name,))
                run_count = tx.execute("DELETE FROM runs WHERE project=?", (name,)).rowcount
                tx.execute("DELETE FROM request_refs WHERE project=?", (name,))
                uploads = self._forget_uploads(tx, name)
                users = self.delete_users_in(tx, name)
                tx.execute("UPDATE projects SET erased=? WHERE name=?", (self.clock(), name))
                detail: dict[str, object] = {"uploads": len(uploads), "runs": run_count,
                                             "links": links}  # fmt: skip
                if users:
                    detail["users"] = users
                if name in ending:
                    detail.update(ended_by=audit.OPERATOR, reason=ending[name])
                if replays and name in replays:
                    detail["replay_of"] = dict(replays[name])
                actor = audit.OPERATOR if name in ending else audit.MATCHER
                (entry,) = self.audit.append_in(
                    tx, audit.Event(actor, "project.expire", name, detail=detail)
                )
            if told is not None:
                told[name] = {**detail, "seq": entry.seq}
            self._unlink_uploads(uploads)
            done.append(name)
        if done:
            self._collect_garbage()
            self.db.checkpoint()
        return done

    def _end_now(self, tx: sqlite3.Connection, name: str) -> bool:
        """Bring project `name`'s date forward to now, inside `tx` (it is ended); False
        where there is no such project or it was deleted already."""
        return bool(
            tx.execute(
                "UPDATE projects SET expires=MIN(expires, ?) WHERE name=? AND erased IS NULL",
                (self.clock(), name),
            ).rowcount
        )
