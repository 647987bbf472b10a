"""Deletion: a member's erasure, and the expiry of whole projects.

Deletion is real: files are unlinked, rows deleted with `secure_delete` on (freed pages
are zeroed) and the WAL checkpointed and truncated, so the bytes are gone from the data
dir, not flagged. The audit log keeps the fact and the counts, never the data.
"""

from __future__ import annotations

from collections.abc import Callable

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import Erasure
from blindmatch.matcher.errors import FailedPrecondition
from blindmatch.matcher.storage.base import ACTIVE_SQL
from blindmatch.matcher.storage.project_store import ProjectStore
from blindmatch.matcher.storage.upload_store import UploadStore


class RetentionStore(ProjectStore, UploadStore):
    def erase_member(
        self, project: str, member: str, then: Callable[[], object] | None = None
    ) -> Erasure:
        """Delete `member`'s uploads and every link that involves its rows, now.

        Refused while a run is queued or running (it reads the uploads). `then` runs
        inside the transaction once the erasure goes ahead (to end the member's streams,
        so that none commits after it).
        """
        with self.db.tx() as tx:
            self.project(project)
            self._require_member(tx, project, member)
            if tx.execute(
                f"SELECT 1 FROM runs WHERE project=? AND state IN {ACTIVE_SQL}", (project,)
            ).fetchone():
                raise FailedPrecondition(
                    "a run is in progress in this project; erase again when it has finished"
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
            uploads = self._forget_uploads(tx, project, member)
            self.audit.append_in(
                tx,
                audit.Event(
                    member,
                    "erase",
                    project,
                    member,
                    detail={"uploads": len(uploads), "links": links},
                ),
            )
        self._unlink_uploads(uploads)
        self._collect_garbage()
        self.db.checkpoint()
        return Erasure(len(uploads), links)

    def expired_projects(self) -> list[str]:
        rows = self.db.query(
            "SELECT name FROM projects WHERE erased IS NULL AND expires <= ? ORDER BY name",
            (self.clock(),),
        )
        return [r[0] for r in rows]

    def expire_projects(self) -> list[str]:
        """Delete every expired project's encodings and results; returns their names.

        The project's name, members and token hashes stay (so a late caller is
        told it expired, and the name is not reused); its uploads, runs and
        links go, rows and files.
        """
        done = []
        for name in self.expired_projects():
            with self.db.tx() as tx:
                runs = "SELECT id FROM runs WHERE project=?"
                links = tx.execute(f"DELETE FROM links WHERE run_id IN ({runs})", (name,)).rowcount
                tx.execute(f"DELETE FROM run_inputs WHERE run_id IN ({runs})", (name,))
                run_count = tx.execute("DELETE FROM runs WHERE project=?", (name,)).rowcount
                uploads = self._forget_uploads(tx, name)
                tx.execute("UPDATE projects SET erased=? WHERE name=?", (self.clock(), name))
                self.audit.append_in(
                    tx,
                    audit.Event(
                        audit.MATCHER,
                        "project.expire",
                        name,
                        detail={"uploads": len(uploads), "runs": run_count, "links": links},
                    ),
                )
            self._unlink_uploads(uploads)
            done.append(name)
        if done:
            self._collect_garbage()
            self.db.checkpoint()
        return done
