"""`blindmatch admin check`: do the standing indexes (`index.sqlite`) hold the index changes
the audit log (`blindmatch.sqlite`) records, no more and no fewer?

An index change is announced in the audit log (an `index.change` entry), then stored in
`index.sqlite` with that entry's seq beside it (`index_changes`; storage/audit_log.py says
why the entry comes first); every member's last stored change is kept there. So:

- every change stored in the index has its `index.change` entry, of the same member and
  change id, with the record count the index stores beside it, and not voided
  (`index.change.void`): else the index holds records no audit entry accounts for (a data
  dir whose index was copied after its database, say; its next entries would reuse the
  seq the change was stored with);
- a member's index holds the records its last stored change left (the count in that
  change's audit entry);
- a member's last change that the log records as done (announced, and settled by a later
  write), with no erasure after it, is stored in the index: else the log claims records
  the index lacks (an index copied before its database).

An announced change not stored (in the log's `audit_intents`) is left to `integrity.py`
(`_check_announced`): start-up voids it, so it is a repair, not a problem.

A running matcher changes both files while they are read: the log is read first, then the
index, and what looks wrong is judged again against the log read afresh after the index (an
entry is written before its change is stored, so a change stored meanwhile has its entry
there; an erasure logged meanwhile explains a member's index gone).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.storage.audit_log import VOID
from blindmatch.matcher.storage.quietread import connect_read_only

Key = tuple[str, str]  # (project, member)


@dataclass(frozen=True)
class Change:
    """An `index.change` entry, or a change stored in the index (its `index_changes` row)."""

    seq: int
    project: str
    member: str
    change_id: str
    record_count: int


@dataclass
class Logged:
    """What the audit log says of index changes, at one moment."""

    last_seq: int = 0
    changes: dict[int, Change] = field(default_factory=dict)
    voided: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)  # announced, not settled (audit_intents)
    erased: dict[Key, int] = field(default_factory=dict)  # last `erase` of a member
    expired: dict[str, int] = field(default_factory=dict)  # last `project.expire`

    def erased_after(self, key: Key, seq: int) -> bool:
        return max(self.erased.get(key, 0), self.expired.get(key[0], 0)) > seq


@dataclass
class Indexed:
    """What index.sqlite holds, at one moment: the changes stored, each member's records."""

    stored: list[Change]
    records: dict[Key, int]


def read_logged(db: sqlite3.Connection) -> Logged:
    logged = Logged()
    row = db.execute("SELECT MAX(seq) FROM audit").fetchone()
    logged.last_seq = row[0] or 0
    for seq, action, project, member, detail_text in db.execute(
        "SELECT seq, action, project, member, detail FROM audit WHERE action IN "
        "('index.change', ?, 'erase', 'project.expire') ORDER BY seq",
        (VOID,),
    ):
        try:
            detail = json.loads(detail_text)
        except ValueError:
            continue  # (an entry that fails its chain: reported with the chain)
        if not isinstance(detail, dict):
            continue
        if action == "index.change" and "change_id" in detail:
            logged.changes[seq] = Change(seq, project, member, str(detail["change_id"]),
                                         int(detail.get("record_count", -1)))  # fmt: skip
        elif action == VOID and isinstance(detail.get("announced"), int):
            logged.voided.add(detail["announced"])
        elif action == "erase":
            logged.erased[(project, member)] = seq
        elif action == "project.expire":
            logged.expired[project] = seq
    logged.pending = {s for (s,) in db.execute("SELECT seq FROM audit_intents")}
    return logged


def read_indexed(db: sqlite3.Connection) -> Indexed | None:
    """None for an index.sqlite from before changes were stored beside the records."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "index_changes" not in tables:
        return None
    stored = [
        Change(seq, p, m, cid, n)
        for p, m, cid, seq, n in db.execute(
            "SELECT project, member, change_id, audit_seq, record_count FROM index_changes "
            "ORDER BY audit_seq"
        )
    ]
    records = {
        (p, m): n
        for p, m, n in db.execute(
            "SELECT project, member, COUNT(*) FROM index_records GROUP BY project, member"
        )
    }
    return Indexed(stored, records)


def _read(path: Path) -> Logged:
    db = connect_read_only(path)
    try:
        db.execute("BEGIN")
        return read_logged(db)
    finally:
        db.close()


def unaccounted(change: Change, logged: Logged) -> str | None:
    """Why the log does not account for a change stored in the index (None: it does)."""
    entry = logged.changes.get(change.seq)
    what = f"index change {change.change_id!r} of {change.project}/{change.member}"
    if change.seq > logged.last_seq:
        return (
            f"{what} is stored in index.sqlite as audit entry {change.seq}, but the audit "
            f"log ends at entry {logged.last_seq}: the index holds records no audit entry "
            "accounts for (an index.sqlite newer than its database: restore both from one "
            "`admin backup`)"
        )
    if entry is None or (entry.project, entry.member, entry.change_id) != (
        change.project, change.member, change.change_id
    ):  # fmt: skip
        return (
            f"{what} is stored in index.sqlite as audit entry {change.seq}, but that entry "
            "is not its `index.change` entry: the index holds records no audit entry "
            "accounts for (an index.sqlite from another moment than its database)"
        )
    if change.seq in logged.voided:
        return (
            f"{what} (audit entry {change.seq}) is stored in index.sqlite, but the audit log "
            f"says it was never stored ({VOID})"
        )
    if entry.record_count != change.record_count:
        return (
            f"{what}: index.sqlite stores it as leaving {change.record_count} records, its "
            f"audit entry {change.seq} says {entry.record_count}"
        )
    return None


def check_index_audit(db_path: Path, index_path: Path) -> list[str]:
    """The problems found between the audit log at `db_path` and the index at `index_path`
    (both read-only; safe beside a running matcher)."""
    first = _read(db_path)
    index = connect_read_only(index_path)
    try:
        index.execute("BEGIN")
        indexed = read_indexed(index)
    finally:
        index.close()
    if indexed is None:
        return []
    problems: list[str] = []
    fresh: Logged | None = None
    last: dict[Key, Change] = {}
    for change in indexed.stored:
        key = (change.project, change.member)
        if key not in last or change.seq > last[key].seq:
            last[key] = change
        if unaccounted(change, first) is None:
            continue
        fresh = fresh or _read(db_path)  # (a change stored after the first read: logged now)
        reason = unaccounted(change, fresh)
        if reason is not None:
            problems.append(reason)
    for key, change in sorted(last.items()):
        held = indexed.records.get(key, 0)
        if held != change.record_count:
            problems.append(
                f"index of {key[0]}/{key[1]}: {held} records, but its last change "
                f"{change.change_id!r} (audit entry {change.seq}) left {change.record_count}"
            )
    problems += _missing(first, indexed, last, db_path)
    return problems


def _missing(first: Logged, indexed: Indexed, last: dict[Key, Change], db_path: Path
             ) -> list[str]:  # fmt: skip
    """Each member's last change the log records as done, not erased since, and lacking
    from the index."""
    done: dict[Key, Change] = {}
    for seq, change in first.changes.items():  # (in seq order)
        if seq not in first.voided and seq not in first.pending:
            done[(change.project, change.member)] = change
    problems: list[str] = []
    fresh: Logged | None = None
    for key, change in sorted(done.items()):
        stored = last.get(key)
        if first.erased_after(key, change.seq) or (stored and stored.seq >= change.seq):
            continue
        fresh = fresh or _read(db_path)
        if fresh.erased_after(key, change.seq):
            continue  # erased while we read
        problems.append(
            f"index change {change.change_id!r} of {key[0]}/{key[1]} (audit entry "
            f"{change.seq}, leaving {change.record_count} records) is recorded as done, but "
            f"index.sqlite does not hold it ({indexed.records.get(key, 0)} records there): "
            "the log claims records the index lacks (an index.sqlite older than its "
            "database: restore both from one `admin backup`)"
        )
    return problems


__all__ = ["check_index_audit"]
