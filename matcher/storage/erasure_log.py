"""Erasures cut short by a matcher from before erasure intents, found from the audit log.

An erasure's intent (`erasure_intents`, storage/retention_store.py) is what tells a start-up
and `admin check` that it may have been cut short. A matcher from before intents, stopped
after an erasure's transaction committed (its `erase` entry logged, its rows deleted) but
before its standing index was deleted from `index.sqlite` or its upload files unlinked, left
no intent: its data dir keeps the member's data with nothing to say so. The audit log does:

- the member's standing index is left when every change `index.sqlite` keeps of it
  (`index_changes`, each stored with the seq of the entry that announced it) was stored
  before the member's last `erase` entry. An erasure deletes them all, and any change made
  after it is stored with a later seq, so an index the member built again after its
  erasure is never taken for a leftover (nor one kept without any change: nothing tells);
- an upload file is left when `clks/` holds it, no upload row refers to it any more, and
  the `upload` entry that announced it is the member's, before its last `erase` entry.

Members with an intent at or after their last `erase` entry are the intents' business
(usecases/erasure.py `complete_cut_short`, storage/erasure_check.py), not this module's.
Plain reads over the connections it is given: start-up's, or the check's read-only ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

FOUND_IN_LOG = (
    "found from the audit log, not from an erasure intent: a matcher from before erasure "
    "intents stopped after this erasure was logged, before all of the member's data was "
    "deleted; start-up deleted what was left"
)


@dataclass(frozen=True)
class LoggedErasure:
    """A member's last erasure, as the audit log says, and what of its data is still kept."""

    seq: int  # its `erase` entry
    project: str
    member: str
    index_records: int | None  # the records of its standing index left; None: none left
    upload_files: tuple[str, ...]  # the ids of its upload files still in clks/

    @property
    def left(self) -> bool:
        return self.index_records is not None or bool(self.upload_files)


def _last_erasures(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(project, member) -> the seq of its last `erase` entry, for members with no intent
    at or after it."""
    last = {
        (p, m): int(seq)
        for p, m, seq in db.execute(
            "SELECT project, member, MAX(seq) FROM audit WHERE action='erase' "
            "GROUP BY project, member"
        )
    }
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "erasure_intents" in tables:
        for p, m, seq in db.execute(
            "SELECT project, member, MAX(seq) FROM erasure_intents GROUP BY project, member"
        ):
            if (p, m) in last and seq >= last[(p, m)]:
                del last[(p, m)]
    return last


def _index_left(index: sqlite3.Connection, project: str, member: str, seq: int) -> int | None:
    """The records of the member's index left by an erasure logged as `seq`: None unless
    `index.sqlite` keeps changes of it, all stored before `seq`."""
    key = (project, member)
    changed = index.execute(
        "SELECT MAX(audit_seq) FROM index_changes WHERE project=? AND member=?", key
    ).fetchone()[0]
    if changed is None or changed > seq:
        return None
    records = index.execute(
        "SELECT COUNT(*) FROM index_records WHERE project=? AND member=?", key
    ).fetchone()[0]
    return int(records)


def _uploaded_by(db: sqlite3.Connection, unreferenced: set[str]
                 ) -> dict[str, tuple[str, str, int]]:  # fmt: skip
    """upload id -> (project, member, seq of its `upload` entry), for those ids."""
    if not unreferenced:
        return {}
    found = {}
    for seq, project, member, detail in db.execute(
        "SELECT seq, project, member, detail FROM audit WHERE action='upload'"
    ):
        upload_id = json.loads(detail).get("upload_id")
        if upload_id in unreferenced:
            found[upload_id] = (project, member, int(seq))
    return found


def unreferenced_files(db: sqlite3.Connection, in_clks: Iterable[str]) -> set[str]:
    """Of the upload ids whose files are in clks/, those no upload row refers to."""
    present = set(in_clks)
    if not present:
        return set()
    rows = {r[0] for r in db.execute("SELECT id FROM uploads")}
    return present - rows


def found_in_log(
    db: sqlite3.Connection, index: sqlite3.Connection | None, unreferenced: set[str]
) -> list[LoggedErasure]:
    """The members' last erasures (no intent at or after them) that left data behind: their
    standing index (read from `index`, None: no index.sqlite), or the files of their uploads
    among `unreferenced` (upload ids in clks/ with no row: `unreferenced_files`), by seq."""
    last = _last_erasures(db)
    if not last:
        return []
    files: dict[tuple[str, str], list[str]] = {}
    for upload_id, (project, member, seq) in sorted(_uploaded_by(db, unreferenced).items()):
        erased = last.get((project, member))
        if erased is not None and seq < erased:
            files.setdefault((project, member), []).append(upload_id)
    found = []
    for (project, member), seq in sorted(last.items(), key=lambda kv: kv[1]):
        held = _index_left(index, project, member, seq) if index is not None else None
        erasure = LoggedErasure(seq, project, member, held,
                                tuple(files.get((project, member), ())))  # fmt: skip
        if erasure.left:
            found.append(erasure)
    return found


__all__ = ["FOUND_IN_LOG", "LoggedErasure", "found_in_log", "unreferenced_files"]
