"""The two-server uploads a member started and the matcher has not taken (table
`twoserver_started`): a member's project upload is its shares to S1, then to S2, then its
header to the matcher (client/remote/twoserver.py `project_upload`), each under the ticket the
matcher issued for it (usecases/tworuns.py `issue_ticket`). One cut after S1 took its shares
(S2 down, the member's process killed) leaves S1 holding the new upload, S2 the earlier one
(or none) and the matcher its earlier record: not a whole upload anywhere, which a run refuses.

So each upload ticket is noted here (the member's latest, by name and when) and cleared in the
transaction that stores the upload it names (`settle`, from `commit_upload`), or when the
member's uploads are forgotten (an erasure, the project's expiry: S1 and S2 forget every tag of
the member). A member with a row here has started an upload that is not whole: `project show`
names it as such and counts no upload of that member as held (its earlier one may be gone at S1
or S2). A ticket whose upload sent nothing (refused before S1) stays noted too, until the member
uploads again: the matcher cannot tell it from one that reached S1. No record, no share: the
project, the member, the upload's name at S1 and S2 (a random tag) and the time."""

from __future__ import annotations

import sqlite3

from blindmatch.matcher.storage.base import StoreBase

SCHEMA = """
CREATE TABLE IF NOT EXISTS twoserver_started (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    name TEXT NOT NULL,
    issued REAL NOT NULL,
    PRIMARY KEY (project, member)
);
"""


def settle(
    tx: sqlite3.Connection, project: str, member: str | None, name: str | None = None
) -> None:
    """Inside `tx`: the member's started upload taken (`name`: only if it is that one) or
    forgotten (`member` None: every member's of the project)."""
    if member is None:
        tx.execute("DELETE FROM twoserver_started WHERE project=?", (project,))
    elif name is None:
        tx.execute("DELETE FROM twoserver_started WHERE project=? AND member=?", (project, member))
    else:
        tx.execute(
            "DELETE FROM twoserver_started WHERE project=? AND member=? AND name=?",
            (project, member, name),
        )


class StartedUploads(StoreBase):
    def note_started(self, project: str, member: str, name: str) -> None:
        """A ticket issued for `member`'s next upload, named `name` at S1 and S2."""
        with self.db.tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO twoserver_started VALUES (?,?,?,?)",
                (project, member, name, self.clock()),
            )

    def started_uploads(self, project: str) -> dict[str, float]:
        """The members of `project` with an upload started and not taken: when it started."""
        rows = self.db.query(
            "SELECT member, issued FROM twoserver_started WHERE project=?", (project,)
        )
        return {str(m): float(t) for m, t in rows}

    def started_names(self, project: str) -> dict[str, str]:
        """The members of `project` with an upload started and not taken: its name at S1
        and S2 (project/member/tag), which `project show` asks them about."""
        rows = self.db.query(
            "SELECT member, name FROM twoserver_started WHERE project=?", (project,)
        )
        return {str(m): str(n) for m, n in rows}


__all__ = ["SCHEMA", "StartedUploads", "settle"]
