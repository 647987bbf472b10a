"""The audit log's entries, kept in blindmatch.sqlite's `audit` table.

The rules (events, the keyed hash chain, verification, what a member may see) are in
core/audit.py; this module appends entries to the chain and reads them back. The parts of
the store append with `append_in`, inside the transaction of the change the entry records;
consultations and disclosures, which change nothing else, with `append` (one entry, its
own transaction) or `append_all` (the query log's batches).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.storage.sqlite import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    purpose TEXT NOT NULL,
    disclosed TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

# The disclosed and detail columns (built once: json.dumps with options builds an encoder
# on every call).
_COLUMN_JSON = json.JSONEncoder(sort_keys=True)


def read_or_make_key(path: Path) -> bytes:
    """The audit HMAC key: 32 random bytes, made once, readable by the owner only."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
    if len(key) < 32:
        raise ValueError(f"{path}: an audit key must be at least 32 bytes")
    return key


class AuditLog:
    def __init__(self, db: Database, key: bytes, clock: Callable[[], float]) -> None:
        self._db = db
        self._key = key
        self._clock = clock

    def append_in(self, tx: sqlite3.Connection, *events: audit.Event) -> list[audit.Entry]:
        """Append events in order to the chain, inside the caller's transaction `tx`."""
        last = tx.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0], last[1]) if last else (0, audit.GENESIS)
        entries = []
        for event in events:
            seq += 1
            entry = audit.seal(self._key, seq, self._clock(), event, prev)
            entries.append(entry)
            prev = entry.hash
        tx.executemany(
            "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.seq,
                    e.time,
                    e.actor,
                    e.action,
                    e.project,
                    e.member,
                    e.purpose,
                    _COLUMN_JSON.encode(e.disclosed),
                    _COLUMN_JSON.encode(e.detail),
                    e.prev_hash,
                    e.hash,
                )
                for e in entries
            ],
        )
        return entries

    def append(self, event: audit.Event) -> audit.Entry:
        """Append one event on its own (a consultation or a disclosure)."""
        with self._db.tx(clears_cache=False) as tx:
            return self.append_in(tx, event)[-1]

    def append_all(self, events: Sequence[audit.Event]) -> None:
        """Append events in one transaction (real-time queries, written in batches)."""
        if events:
            with self._db.tx(clears_cache=False) as tx:
                self.append_in(tx, *events)

    def entries(self, *, project: str = "", after: int = 0) -> list[audit.Entry]:
        """Entries in seq order, optionally of one project and after a seq."""
        sql = "SELECT * FROM audit WHERE seq > ?"
        args: tuple[object, ...] = (after,)
        if project:
            sql += " AND project=?"
            args += (project,)
        return [_entry(r) for r in self._db.query(sql + " ORDER BY seq", args)]

    def verify(self, anchor: tuple[int, str] | None = None) -> audit.Verification:
        return audit.verify(self._key, self.entries(), anchor)


def _entry(row: tuple) -> audit.Entry:
    seq, t, actor, action, project, member, purpose, disclosed, detail, prev, h = row
    return audit.Entry(
        seq, t, actor, action, project, member, purpose,
        json.loads(disclosed), json.loads(detail), prev, h,
    )  # fmt: skip
