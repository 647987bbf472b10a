"""`blindmatch admin check`: did every erasure and expiry delete all it had to?

A member's erasure is logged, with an erasure intent, in one transaction of
`blindmatch.sqlite`; its upload files, its standing index (`index.sqlite`) and the
write-ahead logs' old pages go after, and the intent is forgotten last
(storage/retention_store.py, usecases/erasure.py). A matcher stopped in between (a crash,
a kill -9) leaves an intent, and perhaps the member's data: its index's records (unless a
change was stored after the erasure: its index since) and its upload files. The next start
completes it before serving; until then this check reports the data left as a problem, and
an intent with nothing left as a repair (start-up checkpoints the databases and records it
complete). In a two-server project an intent is forgotten once S1 and S2 have forgotten the
member's shares, so one still there says they may hold them: a problem too (the running
matcher may be asking them again: usecases/erasure_retry.py).
Likewise an expired project whose standing indexes are still in `index.sqlite`, and an
erasure cut short by a matcher from before erasure intents, which left none: found from the
audit log instead (storage/erasure_log.py), a problem too; and an erased member's queries
logged before its last erasure whose purposes and users were not blanked (`_unblanked`: an
erasure cut short, or made before erasures blanked them; the next start blanks them).

Read-only, and safe beside a running matcher: an erasure in progress looks like one cut
short for a moment, so what looks left is reported only if it is still there when read again
at the end of the check (`admin check` reads it first before it hashes the upload files), and
`GRACE_S` after that.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import TWO_SERVER
from blindmatch.matcher.storage.datadir import DataDir, upload_id_of
from blindmatch.matcher.storage.erasure_log import LoggedErasure, found_in_log, unreferenced_files
from blindmatch.matcher.storage.index_store import ERASED, left_before
from blindmatch.matcher.storage.quietread import connect_read_only
from blindmatch.matcher.storage.retention_store import CutShort

# How long what looks left may take to go before it is reported (an erasure in progress
# beside a running matcher takes milliseconds, a huge index's a second or so).
GRACE_S = 2.0
_FIX = "start the matcher to complete the erasure (it deletes what is left before it serves)"


@dataclass(frozen=True)
class _Intent(CutShort):
    """An erasure intent's row (retention_store.py's `CutShort`), and its project's mode."""

    two_server: bool  # S1 and S2 hold its shares too, until asked to forget them


def _read_db(path: Path) -> tuple[list[_Intent], list[str], set[str]]:
    """The erasure intents, the expired projects, and those of them the operator ended
    (`admin end-project`: the latest `project.expire` entry says `ended_by`), at one moment."""
    db = connect_read_only(path)
    try:
        db.execute("BEGIN")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in db.execute("PRAGMA table_info(projects)")}
        mode_sql = "p.mode" if "mode" in columns else "''"
        intents = (
            [
                _Intent(seq, p, m, tuple(json.loads(u)), mode == TWO_SERVER)
                for seq, p, m, u, mode in db.execute(
                    f"SELECT e.seq, e.project, e.member, e.uploads, {mode_sql} "
                    "FROM erasure_intents e LEFT JOIN projects p ON p.name=e.project "
                    "ORDER BY e.seq"
                )
            ]
            if "erasure_intents" in tables
            else []
        )
        expired = [r[0] for r in db.execute("SELECT name FROM projects WHERE erased IS NOT NULL")]
        ended = set()
        for project in expired if "audit" in tables else []:
            row = db.execute(
                "SELECT detail FROM audit WHERE project=? AND action='project.expire' "
                "ORDER BY seq DESC LIMIT 1",
                (project,),
            ).fetchone()
            if row and json.loads(row[0]).get("ended_by") == audit.OPERATOR:
                ended.add(project)
    finally:
        db.close()
    return intents, expired, ended


def _left(files: DataDir, intents: list[_Intent], expired: list[str]
          ) -> tuple[dict[int, tuple[int, list[str]]], dict[str, int]]:  # fmt: skip
    """What each intent left (index records, upload files still in clks/), and the records
    each expired project's indexes still hold."""
    left: dict[int, tuple[int, list[str]]] = {}
    records: dict[str, int] = {}
    index = connect_read_only(files.index_db) if files.index_db.is_file() else None
    try:
        if index is not None:
            index.execute("BEGIN")
        for intent in intents:
            held = None
            if index is not None:
                held = left_before(index, intent.project, intent.member, intent.seq)
            kept = [u for u in intent.uploads if files.clk_file(u).exists()]
            if held is not None or kept:
                left[intent.seq] = (held or 0, kept)
        for project in expired if index is not None else []:
            assert index is not None
            row = index.execute(
                "SELECT (SELECT COUNT(*) FROM index_records WHERE project=?), "
                "(SELECT COUNT(*) FROM index_meta WHERE project=?)",
                (project, project),
            ).fetchone()
            if row[0] or row[1]:
                records[project] = int(row[0])
    finally:
        if index is not None:
            index.close()
    return left, records


def _read_log(files: DataDir) -> list[LoggedErasure]:
    """The erasures without an intent that left data, found from the audit log."""
    db = connect_read_only(files.db)
    index = connect_read_only(files.index_db) if files.index_db.is_file() else None
    try:
        db.execute("BEGIN")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"audit", "uploads"} <= tables:
            return []
        if index is not None:
            index.execute("BEGIN")
            tables = {r[0] for r in index.execute("SELECT name FROM sqlite_master")}
            if not {"index_changes", "index_records"} <= tables:
                index.close()
                index = None
        listed = files.clks.iterdir() if files.clks.is_dir() else iter(())
        in_clks = [u for u in (upload_id_of(f) for f in listed) if u is not None]
        return found_in_log(db, index, unreferenced_files(db, in_clks))
    finally:
        db.close()
        if index is not None:
            index.close()


def _unblanked(files: DataDir) -> dict[tuple[str, str], int]:
    """(project, member) -> its logged queries from before its last erasure whose purposes
    are still there (`IndexStore.forget_queries` blanks them)."""
    if not files.index_db.is_file():
        return {}
    db = connect_read_only(files.db)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='audit'").fetchone():
            return {}
        last = db.execute("SELECT project, member, MAX(time) FROM audit WHERE action='erase' "
                          "GROUP BY project, member").fetchall()  # fmt: skip
    finally:
        db.close()
    index = connect_read_only(files.index_db)
    try:
        if (
            not last
            or not index.execute("SELECT 1 FROM sqlite_master WHERE name='query_log'").fetchone()
        ):
            return {}
        erased = {(p, m): float(at) for p, m, at in last}
        found: dict[tuple[str, str], int] = {}
        for p, m, t in index.execute(
            "SELECT project, member, time FROM query_log WHERE purpose!=?", (ERASED,)
        ):
            if t <= erased.get((p, m), -1.0):
                found[(p, m)] = found.get((p, m), 0) + 1
        return found
    finally:
        index.close()


@dataclass(frozen=True)
class Erasures:
    """The erasure intents, what each left, the expired projects' index records, and the
    erasures without an intent that left data (from the audit log), as read at one moment."""

    intents: list[_Intent]
    left: dict[int, tuple[int, list[str]]]  # intent seq -> (index records, upload files)
    records: dict[str, int]  # expired project -> its indexes' records still kept
    logged: list[LoggedErasure] = field(default_factory=list)
    queries: dict[tuple[str, str], int] = field(default_factory=dict)  # `_unblanked`
    ended: set[str] = field(default_factory=set)  # expired projects the operator ended

    def suspects(self) -> set[object]:
        """What looks left: intents' seqs (a two-server one always: S1's and S2's shares
        cannot be seen from here), expired projects' names, and ("log", seq) of each
        erasure found from the log."""
        two = {i.seq for i in self.intents if i.two_server}
        queries = {("queries", *key) for key in self.queries}
        return {*self.left, *two, *self.records, *(("log", e.seq) for e in self.logged), *queries}


def read_erasures(files: DataDir) -> Erasures | None:
    """What the erasures and expiries left, now (None: a database unreadable)."""
    try:
        intents, expired, ended = _read_db(files.db)
        left, records = _left(files, intents, expired)
        logged = _read_log(files)
        queries = _unblanked(files)
    except sqlite3.DatabaseError:
        return None  # (the databases' own checks report it)
    return Erasures(intents, left, records, logged, queries, ended)


def check_erasures(
    files: DataDir, earlier: Erasures | None = None, *, grace: float | None = None
) -> tuple[list[str], list[str]]:
    """(problems, repairs): an erased member's data still in the data dir, or an expired
    project's standing indexes (problems); erasures cut short with nothing left (repairs).
    What looks left is read again now and reported only if it was `earlier` too (read at
    the start of the check; by default, just before) and still is `grace` seconds later
    (default `GRACE_S`): an erasure in progress completes. `grace=0` for a copy no process
    writes (`admin backup`'s staging copy), where waiting would change nothing."""
    first = earlier if earlier is not None else read_erasures(files)
    if first is None:
        return [], []
    now = read_erasures(files) if first.suspects() else first
    if now is None:
        return [], []
    both = first.suspects() & now.suspects()
    waited = time.monotonic() + (GRACE_S if grace is None else grace)
    while both and time.monotonic() < waited:  # (a live erasure finishes within it)
        time.sleep(0.1)
        again = read_erasures(files)
        if again is None:
            return [], []
        now, both = again, both & again.suspects()
    before = {i.seq for i in first.intents}
    problems, repairs = [], []
    for intent in now.intents:
        who = f"{intent.project}/{intent.member}"
        if intent.seq in both:
            held, kept = now.left.get(intent.seq, (0, []))
            what = [f"{held} records of its standing index in index.sqlite"] if held else []
            what += [f"{len(kept)} of its upload files in clks/"] if kept else []
            where = f"{' and '.join(what)} are still in the data dir" if what else ""
            if intent.two_server:
                shares = "S1 and S2 may still hold its shares (not yet asked to forget them)"
                where = f"{where}, and {shares}" if where else shares
            problems.append(
                f"{who} erased its data (audit entry {intent.seq}), but {where}: the erasure "
                f"was cut short (the matcher stopped part-way); {_FIX}"
                + (" and asks S1 and S2 to forget the shares" if intent.two_server else "")
            )
        elif intent.seq in before and intent.seq not in now.suspects():
            repairs.append(
                f"{who}: the erasure logged as audit entry {intent.seq} deleted its data but "
                "was not recorded complete (the matcher stopped part-way); start-up "
                "checkpoints the databases and records it (`erase.complete`)"
            )
    for erased in now.logged:
        if ("log", erased.seq) not in both:
            continue
        what = ([f"{erased.index_records} records of its standing index in index.sqlite"]
                if erased.index_records is not None else [])  # fmt: skip
        what += [f"{len(erased.upload_files)} of its upload files in clks/"] * bool(
            erased.upload_files
        )
        problems.append(
            f"{erased.project}/{erased.member} erased its data (audit entry {erased.seq}), but "
            f"{' and '.join(what)} are still in the data dir: the erasure was cut short by a "
            "matcher from before erasure intents (no intent was recorded; found from the audit "
            f"log); {_FIX}"
        )
    for (project, member), n in sorted(now.queries.items()):
        if ("queries", project, member) in both:
            problems.append(
                f"{project}/{member} erased its data, but the query log (index.sqlite) still "
                f"holds the purposes and users of {n} of its queries from before: the erasure "
                "was cut short, or made by a matcher from before they were blanked; start the "
                "matcher (it blanks them before it serves)"
            )
    for project, n in sorted(now.records.items()):
        if project in both:
            # An ended project is said to be ended (its `project.expire` entry says
            # `ended_by`), as members are told: before leftovers57, "expired" for it too.
            gone, ending = (
                ("was ended by the operator (admin end-project)", "ending")
                if project in now.ended
                else ("expired", "expiry")
            )
            problems.append(
                f"project {project} {gone}, but index.sqlite still holds its standing "
                f"indexes ({n} records): its {ending} was cut short (the matcher stopped "
                f"part-way); start the matcher to complete the {ending} (it deletes them "
                "before it serves anything)"
            )
    return problems, repairs


__all__ = ["Erasures", "check_erasures", "read_erasures"]
