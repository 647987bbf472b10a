"""The audit log's entries, kept in blindmatch.sqlite's `audit` table.

The rules (events, the keyed hash chain, verification, what a member may see) are in
core/audit.py; this module appends entries to the chain and reads them back. The parts of
the store append with `append_in`, inside the transaction of the change the entry records;
consultations and disclosures, which change nothing else, with `append` or `append_all`,
which return once the entries are durable: a group commit (`sqlite.GroupCommit`), so the
disclosures that arrive together (real-time queries, results) share one transaction and
one fsync, and a failure to write them (a full disk) fails them all before anything leaves.

A change kept in the other database (a standing index, `index.sqlite`) cannot commit in
the same transaction as its entry: SQLite commits across two WAL databases are not atomic.
Its entry is written first, as an *announcement* (`announce`, with a row in
`audit_intents`); the change is then stored with the entry's seq beside it. An
announcement whose change never got stored (a crash, a full disk between the two) is
answered at the next start-up by an `index.change.void` entry (`void`), so the log never
lacks a change and never claims one that did not happen.

The chain's key is made once, with the first database; after that a missing key refuses
start-up (`read_key`): a new key would make every earlier entry fail verification.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.sqlite import Database, GroupCommit

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
    hash TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT ''  -- the named user acting for `actor` (project_store MIGRATIONS)
);
CREATE TABLE IF NOT EXISTS audit_intents (
    seq INTEGER PRIMARY KEY,       -- the entry that announced a change to another database
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    change_id TEXT NOT NULL
);
"""

VOID = "index.change.void"

log = logging.getLogger("blindmatch.matcher")

# The disclosed and detail columns (built once: json.dumps with options builds an encoder
# on every call).
_COLUMN_JSON = json.JSONEncoder(sort_keys=True)


KEY_BYTES = 32  # an audit key's length (a shorter one is refused)


def read_key(path: Path, *, entries: int) -> bytes:
    """The audit HMAC key: 32 random bytes, made (readable by the owner only) while the
    log has no `entries`; after that, a missing or short key refuses start-up."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if entries:
            raise StartupRefused(
                f"the audit key {path} is missing, but the audit log holds {entries} "
                "entries made with it; a new key would make every one of them fail "
                "verification, so the matcher will not start. Recover: restore the key "
                "from where you back it up (or pass `serve --audit-key FILE` if it is kept "
                "elsewhere), then start again (docs/operations.md, Recovery)"
            ) from None
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
    if len(key) < KEY_BYTES:
        raise StartupRefused(
            f"the audit key {path} holds {len(key)} bytes; an audit key is at least "
            f"{KEY_BYTES}. "
            "Restore it from where you back it up, then start again"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:  # kept outside the data dir (serve --audit-key), not checked with it
        raise StartupRefused(
            f"the audit key {path} is open to other users (mode {mode:04o}): whoever reads it "
            "can re-seal an edited audit log. Make it its owner's only, then start again:\n"
            f"  chmod go-rwx {path}"
        )
    return key


def entry_count(db: Database) -> int:
    return int(db.query("SELECT COUNT(*) FROM audit")[0][0])


class AuditLog:
    def __init__(self, db: Database, key: bytes, clock: Callable[[], float]) -> None:
        self._db = db
        self._key = key
        self._clock = clock
        self._group: GroupCommit[audit.Event] = GroupCommit(self._write)
        # The latest entry this process knows is committed (at its start, at each of its own
        # group commits, at each verify): `verify` checks it is still there, unchanged, so
        # a tail cut off (or replaced) on disk while the matcher runs fails verification
        # without an anchor (attackwalk, 2026-12-07; before, such a log verified intact).
        self._seen_lock = threading.Lock()
        last = db.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        self._seen: tuple[int, str] = (last[0][0], last[0][1]) if last else (0, audit.GENESIS)
        self._lost: list[str] = []  # what a verify found of it, once found

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
            "INSERT INTO audit (seq, time, actor, action, project, member, purpose, disclosed, "
            "detail, prev_hash, hash, user) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    e.user,
                )
                for e in entries
            ],
        )
        return entries

    def append(self, event: audit.Event) -> None:
        """Append a consultation or a disclosure; returns once it is durable."""
        self._group.submit((event,))

    def append_all(self, events: Sequence[audit.Event]) -> None:
        """Append events, in order; returns once they are durable (group-committed with
        whatever else arrives meanwhile)."""
        if events:
            self._group.submit(events)

    def _write(self, events: list[audit.Event]) -> None:
        with self._db.tx(clears_cache=False) as tx:
            entries = self.append_in(tx, *events)
        self._saw(entries[-1].seq, entries[-1].hash)  # committed

    def _saw(self, seq: int, digest: str) -> None:
        with self._seen_lock:
            if seq > self._seen[0]:
                self._seen = (seq, digest)

    @property
    def group_commits(self) -> tuple[int, int]:
        """(transactions, entries) written by group commit so far."""
        return self._group.writes, self._group.items

    # -- changes stored in another database ---------------------------------------------

    def announce(
        self,
        event: audit.Event,
        change_id: str,
        settled: Iterable[int] = (),
        check: Callable[[], None] | None = None,
    ) -> int:
        """Write `event`, announcing a change that is stored next in another database;
        its seq, which the change is stored with. `settled`: earlier announcements whose
        changes are known stored, forgotten in the same transaction. An earlier
        announcement of the same change id, never stored (its write failed), is voided.
        `check` runs first inside the transaction and may refuse (nothing is written)."""
        project, member = event.project, event.member
        with self._db.tx(clears_cache=False) as tx:
            if check is not None:
                check()
            tx.executemany("DELETE FROM audit_intents WHERE seq=?", [(s,) for s in settled])
            stale = tx.execute(
                "SELECT seq FROM audit_intents WHERE project=? AND member=? AND change_id=?",
                (project, member, change_id),
            ).fetchall()
            self._void_in(tx, [(s, project, member, change_id) for (s,) in stale])
            entry = self.append_in(tx, event)[-1]
            tx.execute(
                "INSERT INTO audit_intents VALUES (?,?,?,?)",
                (entry.seq, project, member, change_id),
            )
        return entry.seq

    def announced(self) -> list[tuple[int, str, str, str]]:
        """(seq, project, member, change id) of every announcement not yet settled."""
        return self._db.query("SELECT seq, project, member, change_id FROM audit_intents")

    def settle(self, seqs: Iterable[int]) -> None:
        """Forget announcements whose changes are stored."""
        with self._db.tx(clears_cache=False) as tx:
            tx.executemany("DELETE FROM audit_intents WHERE seq=?", [(s,) for s in seqs])

    def void(self, announcements: Sequence[tuple[int, str, str, str]]) -> None:
        """Record that these announced changes were never stored, and forget them."""
        with self._db.tx(clears_cache=False) as tx:
            self._void_in(tx, announcements)

    def _void_in(
        self, tx: sqlite3.Connection, announcements: Sequence[tuple[int, str, str, str]]
    ) -> None:
        for seq, project, member, change_id in announcements:
            self.append_in(
                tx,
                audit.Event(
                    audit.MATCHER,
                    VOID,
                    project,
                    member,
                    detail={
                        "announced": seq,
                        "change_id": change_id,
                        "why": "the matcher stopped or failed before the change was stored; "
                        "nothing of it was kept",
                    },
                ),
            )
            tx.execute("DELETE FROM audit_intents WHERE seq=?", (seq,))

    def entries(self, *, project: str = "", after: int = 0) -> list[audit.Entry]:
        """Entries in seq order, optionally of one project and after a seq."""
        sql = "SELECT * FROM audit WHERE seq > ?"
        args: tuple[object, ...] = (after,)
        if project:
            sql += " AND project=?"
            args += (project,)
        return [_entry(r) for r in self._db.query(sql + " ORDER BY seq", args)]

    def last_seq(self, *, project: str = "") -> int:
        """The last entry's seq (of one project's entries, if given); 0 where there is none."""
        sql = "SELECT MAX(seq) FROM audit" + (" WHERE project=?" if project else "")
        rows = self._db.query(sql, (project,) if project else ())
        return int(rows[0][0] or 0) if rows else 0

    def verify(self, anchor: tuple[int, str] | None = None) -> audit.Verification:
        """The chain verified (with `anchor`, if given), and the latest entry this process
        knew committed checked to be still there, unchanged."""
        with self._seen_lock:
            seen = self._seen  # read before the entries: every entry up to it is in them
        entries = self.entries()
        found = audit.verify(self._key, entries, anchor)
        if not self._lost and (problems := seen_problems(entries, seen)):
            log.error("audit log: %s", "; ".join(problems))
            self._lost = problems  # said at every verify from now on (entries go on after)
        if self._lost:
            return dataclasses.replace(found, ok=False, problems=found.problems + self._lost)
        if found.ok:
            self._saw(found.head_seq, found.head_hash)
        return found


def seen_problems(entries: Sequence[audit.Entry], seen: tuple[int, str]) -> list[str]:
    """What is wrong with `entries` (the whole log, in seq order) given that entry
    `seen` (seq, hash) was committed to it earlier by this matcher: nothing, or that the
    log was cut short before it, or that it was replaced."""
    seq, digest = seen
    if not seq:
        return []
    for entry in reversed(entries):
        if entry.seq == seq:
            if hmac.compare_digest(entry.hash, digest):
                return []
            return [
                f"entry {seq}: not the entry this matcher wrote there (hash {digest[:16]}...): "
                "the log's tail was cut off on disk and written again since"
            ]
        if entry.seq < seq:
            break
    head = entries[-1].seq if entries else 0
    return [
        f"the log ends at entry {head}, but this matcher wrote up to entry {seq} since it "
        "started: entries were cut off its end on disk"
    ]


def read_entries(conn: sqlite3.Connection) -> Iterable[audit.Entry]:
    """Every entry, in seq order, through `conn` (for the integrity check)."""
    return (_entry(r) for r in conn.execute("SELECT * FROM audit ORDER BY seq"))


_CHAIN_PROBLEMS = 10  # the chain's problems a check names; the rest counted


def chain_problems(
    conn: sqlite3.Connection, key_file: Path, entries: int, *, require_key: bool, log: str,
    who: str, lister: str,
) -> list[str]:  # fmt: skip
    """What `admin check` (storage/integrity.py) and a role's check (storage/role_check.py)
    say of the keyed chain of the `entries` entries read through `conn`, verified with the
    key in `key_file`: nothing where it verifies, or where the key is missing and not
    `require_key` (a backup, whose key is kept apart). `log` names the log in each problem,
    `who` what refuses to start without the key, `lister` the command that lists them all."""
    try:
        key = key_file.read_bytes()
    except FileNotFoundError:
        if entries and require_key:
            return [
                f"audit key {key_file}: missing, so {who} refuses to start and its "
                f"{entries} audit entries cannot be verified; restore it from "
                "where you back it up (or pass --audit-key FILE if it is kept elsewhere)"
            ]
        return []
    if len(key) < 32:
        return [f"audit key {key_file}: {len(key)} bytes, at least 32 expected"]
    found = audit.verify(key, read_entries(conn))
    if found.ok:
        return []
    edited = sum(1 for p in found.problems if p.endswith("(edited)"))
    if found.entries and edited == found.entries:
        return [
            f"{log}: none of its {found.entries} entries verifies with {key_file}: "
            "it is not the key the log was written with; restore the right one"
        ]
    problems = [f"{log}: {p}" for p in found.problems[:_CHAIN_PROBLEMS]]
    if len(found.problems) > _CHAIN_PROBLEMS:
        more = len(found.problems) - _CHAIN_PROBLEMS
        problems.append(f"{log}: {more} more (`{lister}` lists all)")
    return problems


def _entry(row: tuple) -> audit.Entry:
    """An entry from its row (a data dir from before named users lacks the `user` column
    until the store's migration adds it; `admin check` may read one)."""
    seq, t, actor, action, project, member, purpose, disclosed, detail, prev, h = row[:11]
    return audit.Entry(
        seq, t, actor, action, project, member, purpose,
        json.loads(disclosed), json.loads(detail), prev, h, row[11] if len(row) > 11 else "",
    )  # fmt: skip
