"""Durable state of the real-time side, in its own SQLite file in the data dir.

    DIR/index.sqlite   standing-index records, per-member encoding (clk_bits, fingerprint,
                       fallback_bits),
                       query limits and settings, and the query volume log

Kept apart from `blindmatch.sqlite` so that a large index never slows the batch side's
single writer. A change to an index is one transaction (WAL, full sync): acknowledged
means durable, and a failed change leaves nothing behind. Each change is stored with the
seq of the audit entry that announced it (`index_changes`; audit_log.py says why the
entry comes first) and, when the member gave one, its retry id and digest, so that a
retry of a change already stored gets its acknowledgement again (kept for
`CHANGE_KEY_SECONDS`). The query log holds counts and purposes only, never an encoding;
it is written in batches off the request path (see `realtime.querylog.QueryLog`), after
the queries' audit entries, so the last moments of it may be lost in a power cut (the
audit log is not).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.core.fallback import Rule
from blindmatch.matcher.domain import CHANGE_KEY_SECONDS, ChangeSummary, Encoding, QueryRecord
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.sqlite import Database, refuse_newer, roll_back, stamp_layout

SCHEMA = """
CREATE TABLE IF NOT EXISTS index_meta (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    clk_bits INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    fallback_bits INTEGER NOT NULL DEFAULT 0,  -- of each CLK, its fallback CLK (core.fallback)
    rule TEXT NOT NULL DEFAULT '',  -- the rule over both CLKs (core.fallback Rule.text)
    PRIMARY KEY (project, member)
);
CREATE TABLE IF NOT EXISTS index_records (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    ref TEXT NOT NULL,
    clk BLOB NOT NULL,
    PRIMARY KEY (project, member, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS query_limits (
    project TEXT NOT NULL,
    member TEXT NOT NULL,          -- '' for the project's default
    per_minute INTEGER NOT NULL,   -- 0: the matcher's default
    per_day INTEGER NOT NULL,
    PRIMARY KEY (project, member)
);
CREATE TABLE IF NOT EXISTS query_settings (
    project TEXT PRIMARY KEY,
    allow_watch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS query_log (
    time REAL NOT NULL,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    kind TEXT NOT NULL,            -- query, watch
    purpose TEXT NOT NULL,
    records INTEGER NOT NULL,
    records_with_hits INTEGER NOT NULL,
    refused TEXT NOT NULL,         -- '' when answered, else why not
    user TEXT NOT NULL DEFAULT ''  -- the member's named user who asked; '' its own token
);
CREATE INDEX IF NOT EXISTS query_log_by_time ON query_log (project, time);
CREATE TABLE IF NOT EXISTS index_changes (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    change_id TEXT NOT NULL,       -- the member's retry id, or one the matcher made
    audit_seq INTEGER NOT NULL,    -- the audit entry that announced it
    digest TEXT NOT NULL,          -- of the change's content, to tell a retry from a reuse
    added INTEGER NOT NULL,
    replaced INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (project, member, change_id)
);
"""
# `secure_delete`: a deleted record's CLK is zeroed in its page, not left in free space
# (erasure and expiry checkpoint the WAL too, so no old copy of the page stays in it).
PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON")
# index.sqlite's layout, kept in its header (`PRAGMA user_version`) as blindmatch.sqlite keeps
# its own (project_store.py `LAYOUT`): written at start once the columns added since are
# there; a file from before the marker reads 0, layout 1. A file of a newer layout refuses
# the start (`refuse_newer_index`, from store.py before anything in the data dir changes).
LAYOUT = 1
# Columns added after the first release: (table, column, declaration).
_COLUMNS_ADDED = (
    ("index_meta", "fallback_bits", "INTEGER NOT NULL DEFAULT 0"),
    ("index_meta", "rule", "TEXT NOT NULL DEFAULT ''"),
    ("query_log", "user", "TEXT NOT NULL DEFAULT ''"),
)


def refuse_newer_index(path: Path) -> None:
    """`StartupRefused` for an index.sqlite of a layout this blindmatch does not know."""
    refuse_newer(path, LAYOUT, roll_back(path.parent))  # (never moved aside alone: its
    # standing indexes are what blindmatch.sqlite's audit log accounts for)


@dataclass(frozen=True)
class StoredChange:
    """What is kept of a change beside it: its id, announcing entry, digest and summary."""

    change_id: str
    audit_seq: int
    digest: str
    summary: ChangeSummary


def left_before(conn: sqlite3.Connection, project: str, member: str, seq: int) -> int | None:
    """What an erasure logged as audit entry `seq` left of a member's standing index: its
    record count when index.sqlite keeps anything of it (records, encoding, changes) and
    every change kept was stored before `seq`; None when nothing is kept, or a change was
    stored after the erasure (the member's index since, not a leftover)."""
    key = (project, member)
    last = conn.execute(
        "SELECT MAX(audit_seq) FROM index_changes WHERE project=? AND member=?", key
    ).fetchone()[0]
    records = conn.execute(
        "SELECT COUNT(*) FROM index_records WHERE project=? AND member=?", key
    ).fetchone()[0]
    meta = conn.execute("SELECT 1 FROM index_meta WHERE project=? AND member=?", key).fetchone()
    if (last is not None and last > seq) or (last is None and not records and meta is None):
        return None
    return int(records)


ERASED = "(erased)"  # a logged query's purpose and user once its member erased its data
_QUERY_LOG = "time, project, member, kind, purpose, records, records_with_hits, refused, user"


class IndexStore:
    """Standing indexes, limits and the query log, in DIR/index.sqlite."""

    def __init__(self, data_dir: str | Path) -> None:
        files = DataDir(Path(data_dir))
        if files.index_db.is_file():
            refuse_newer_index(files.index_db)
        files.make()
        self.db = Database(files.index_db, SCHEMA, pragmas=PRAGMAS)
        added: list[str] = []
        with self.db.tx() as tx:  # a data dir from before fallback_bits, or query_log's user
            if stamp_layout(tx, LAYOUT):
                added.append("the layout marker")
            for table, column, decl in _COLUMNS_ADDED:
                if column not in {r[1] for r in tx.execute(f"PRAGMA table_info({table})")}:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    added.append(f"column {table}.{column}")
        self.db.say_upgrade(LAYOUT, *added)

    def close(self) -> None:
        self.db.close()

    # -- standing indexes -----------------------------------------------------------------

    def encodings(self) -> dict[tuple[str, str], Encoding]:
        """(project, member) -> encoding, for every non-empty index."""
        rows = self.db.query(
            "SELECT project, member, clk_bits, fingerprint, fallback_bits, rule FROM index_meta"
        )
        return {(p, m): Encoding(b, bytes(f), fb, Rule.parse(r)) for p, m, b, f, fb, r in rows}

    def records(self, project: str, member: str) -> tuple[list[str], bytes]:
        """An index's refs and their CLKs (concatenated, in the same order)."""
        with self.db.reading() as conn:
            cursor = conn.execute(
                "SELECT ref, clk FROM index_records WHERE project=? AND member=?",
                (project, member),
            )
            refs: list[str] = []
            clks: list[bytes] = []
            for ref, clk in cursor:
                refs.append(ref)
                clks.append(clk)
        return refs, b"".join(clks)

    def apply_change(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        *,
        size_after: int,
        change: StoredChange,
    ) -> None:
        """Put and remove records in one durable transaction, with `change` beside them."""
        now = time.time()
        with self.db.tx() as tx:
            tx.execute(
                "DELETE FROM index_changes WHERE project=? AND member=? AND time < ?",
                (project, member, now - CHANGE_KEY_SECONDS),
            )
            done = change.summary
            tx.execute(
                "INSERT OR REPLACE INTO index_changes VALUES (?,?,?,?,?,?,?,?,?,?)",
                (project, member, change.change_id, change.audit_seq, change.digest,
                 done.added, done.replaced, done.removed, done.record_count, now),
            )  # fmt: skip
            tx.executemany(
                "DELETE FROM index_records WHERE project=? AND member=? AND ref=?",
                [(project, member, ref) for ref in removes],
            )
            tx.executemany(
                "INSERT OR REPLACE INTO index_records VALUES (?,?,?,?)",
                ((project, member, ref, clk) for ref, clk in puts),
            )
            if size_after:
                tx.execute(
                    "INSERT OR REPLACE INTO index_meta "
                    "(project, member, clk_bits, fingerprint, fallback_bits, rule) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        project,
                        member,
                        encoding.clk_bits,
                        encoding.fingerprint,
                        encoding.fallback_bits,
                        encoding.rule.text(),
                    ),
                )
            else:
                tx.execute("DELETE FROM index_meta WHERE project=? AND member=?", (project, member))

    def stored_change(self, project: str, member: str, change_id: str) -> StoredChange | None:
        """The change stored under this id (a retry id, or the matcher's), if any."""
        rows = self.db.query(
            "SELECT audit_seq, digest, added, replaced, removed, record_count "
            "FROM index_changes WHERE project=? AND member=? AND change_id=?",
            (project, member, change_id),
        )
        if not rows:
            return None
        seq, digest, *counts = rows[0]
        return StoredChange(change_id, seq, digest, ChangeSummary(*counts))

    def erase_member(self, project: str, member: str) -> None:
        """Delete a member's whole index (for erasure): gone from the data dir, the WAL
        included, when this returns."""
        with self.db.tx() as tx:
            for table in ("index_records", "index_meta", "index_changes"):
                tx.execute(f"DELETE FROM {table} WHERE project=? AND member=?", (project, member))
        self.db.checkpoint()

    def left_by_erasure(self, project: str, member: str, seq: int) -> int | None:
        """`left_before` (the index an erasure cut short left), read now."""
        with self.db.reading() as conn:
            return left_before(conn, project, member, seq)

    def project_records(self, project: str) -> int:
        """How many records the project's standing indexes hold."""
        rows = self.db.query("SELECT COUNT(*) FROM index_records WHERE project=?", (project,))
        return int(rows[0][0])

    def projects(self) -> list[str]:
        """Every project with a standing index."""
        return [r[0] for r in self.db.query("SELECT DISTINCT project FROM index_meta")]

    def erase_project(self, project: str) -> None:
        """Delete every index, limit and logged query of a project (for expiry)."""
        with self.db.tx() as tx:
            tables = ("index_records", "index_meta", "index_changes", "query_limits")
            for table in (*tables, "query_settings"):
                tx.execute(f"DELETE FROM {table} WHERE project=?", (project,))
            tx.execute("DELETE FROM query_log WHERE project=?", (project,))
        self.db.checkpoint()

    # -- limits and settings --------------------------------------------------------------

    def set_limits(self, project: str, member: str, per_minute: int, per_day: int) -> None:
        with self.db.tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO query_limits VALUES (?,?,?,?)",
                (project, member, per_minute, per_day),
            )

    def limits(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(project, member or '') -> (per_minute, per_day); 0 means the default."""
        return self.db.cached(
            "limits",
            lambda conn: {
                (p, m): (pm, pd)
                for p, m, pm, pd in conn.execute(
                    "SELECT project, member, per_minute, per_day FROM query_limits"
                )
            },
        )

    def set_allow_watch(self, project: str, allow: bool) -> None:
        with self.db.tx() as tx:
            tx.execute("INSERT OR REPLACE INTO query_settings VALUES (?,?)", (project, int(allow)))

    def allow_watch(self) -> set[str]:
        allowed = self.db.cached(
            "allow_watch",
            lambda conn: {
                p for (p,) in conn.execute("SELECT project FROM query_settings WHERE allow_watch")
            },
        )
        return set(allowed)

    # -- the query log --------------------------------------------------------------------

    def forget_queries(self, project: str, member: str, until: float) -> int:
        """A member's erasure (its `erase` entry's time `until`): the purposes and named users
        of its queries logged until then blanked (`ERASED`; a purpose is a case reference,
        a user an officer's name), their times and counts kept (the member's quota is
        re-counted from them at a restart; the audit log keeps the same); the old values
        zeroed (secure_delete) and out of the WAL. How many rows it blanked."""
        with self.db.tx() as tx:
            blanked = tx.execute(
                "UPDATE query_log SET purpose=?, user=? WHERE project=? AND member=? AND "
                "time<=? AND purpose!=?",
                (ERASED, ERASED, project, member, until, ERASED),
            ).rowcount
        if blanked:
            self.db.checkpoint()
        return int(blanked)

    def forget_queries_before(self, erased: dict[tuple[str, str], float]) -> int:
        """`forget_queries` for every erased member at once (start-up: `erased` maps each to
        its last erasure's time), in one pass over the log and one transaction."""
        with self.db.tx() as tx:
            rows = [(ERASED, ERASED, rowid) for rowid, p, m, t in tx.execute(
                "SELECT rowid, project, member, time FROM query_log WHERE purpose!=?", (ERASED,)
            ) if t <= erased.get((p, m), -1.0)]  # fmt: skip
            tx.executemany("UPDATE query_log SET purpose=?, user=? WHERE rowid=?", rows)
        if rows:
            self.db.checkpoint()
        return len(rows)

    def log_queries(self, entries: Sequence[QueryRecord]) -> None:
        with self.db.tx(clears_cache=False) as tx:
            tx.executemany(
                f"INSERT INTO query_log ({_QUERY_LOG}) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.time,
                        e.project,
                        e.member,
                        e.kind,
                        e.purpose,
                        e.records,
                        e.records_with_hits,
                        e.refused,
                        e.user,
                    )
                    for e in entries
                ],
            )

    def logged_queries(self, since: float, project: str | None = None) -> list[QueryRecord]:
        sql = f"SELECT {_QUERY_LOG} FROM query_log WHERE time >= ?"
        args: tuple[object, ...] = (since,)
        if project is not None:
            sql += " AND project = ?"
            args += (project,)
        return [
            QueryRecord(t, p, m, kind, purpose, n, hits, refused, user=user)
            for t, p, m, kind, purpose, n, hits, refused, user in self.db.query(
                sql + " ORDER BY time", args
            )
        ]
