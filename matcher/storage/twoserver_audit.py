"""A two-server role's audit log (docs/operations.md "Two servers and a combiner"): the
matcher's own append-only keyed chain (storage/audit_log.py, core/audit.py), in a SQLite file
of its own under the role's `--data-dir`: `twoserver-ROLE.sqlite`, its key beside it in
`twoserver-ROLE.audit.key` (made with the first entry; owner-only). What it logs: each
upload a role holds (the member, records, CLKs, the SHA-256 of the arrays it holds, never
the arrays) and each run a role takes part in (who asked, the members, the pairs, the links
at the combiner; S2 each run and pair of members S1 opens batches of), each batch refused
(a pair again, a pair S1 did not propose, the run's cut-offs changed) and the extras C asked
for. `verify_log` checks a role's chain (`blindmatch two-server verify-audit`).
"""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.storage.audit_log import (
    SCHEMA,
    AuditLog,
    entry_count,
    read_entries,
    read_key,
)
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found
from blindmatch.matcher.storage.sqlite import Database

PRAGMAS = ("journal_mode=WAL", "synchronous=FULL")


class RoleAudit:
    """The log of one role: `log` (an `AuditLog`) appends, returning once durable."""

    def __init__(self, data_dir: Path, role: str, clock: Callable[[], float] = time.time) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = data_dir / f"twoserver-{role}.sqlite"
        self.db = Database(self.path, SCHEMA, pragmas=PRAGMAS)
        try:
            key = read_key(data_dir / f"twoserver-{role}.audit.key", entries=entry_count(self.db))
        except BaseException:
            self.db.close()
            raise
        self.log = AuditLog(self.db, key, clock)

    def close(self) -> None:
        self.db.close()


class Unreadable(Exception):
    """A role's audit log or key that cannot be checked (the message names the file)."""


def log_path(data_dir: Path, role: str) -> Path:
    return data_dir / f"twoserver-{role}.sqlite"


def verify_log(data_dir: Path, role: str, key_file: Path | None = None) -> audit.Verification:
    """Check one role's chain (every entry's HMAC, and each entry's link to the one before),
    read-only, so a running role's log can be checked; `key_file`: where its key is kept
    (default: beside the log), refused unless owner-only, as the role made it."""
    path = log_path(data_dir, role)
    key_path = key_file or data_dir / f"twoserver-{role}.audit.key"
    if not path.is_file():
        raise Unreadable(f"{path}: no audit log of role {role} here (`two-server role --data-dir`)")
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        key = key_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise Unreadable(f"{key_path}: not found (the role's audit key)") from None
    if mode & 0o077:
        raise Unreadable(
            f"{key_path}: readable by others than its owner (mode {mode:o}); whoever reads it "
            f"can rewrite the log undetected: chmod 600 {key_path}"
        )
    if len(key) < 32:
        raise Unreadable(f"{key_path}: {len(key)} bytes; an audit key is at least 32")
    try:
        entries = _entries(path)
    except sqlite3.Error as exc:
        raise Unreadable(f"{path}: not an audit log ({exc})") from None
    return audit.verify(key, entries)


def _entries(path: Path) -> list[audit.Entry]:
    """Every entry of the log at `path`, read without a write beside it (a stopped role's:
    before, a read-only reader made its -wal and -shm; quietread.py `left_as_found`)."""

    def read() -> list[audit.Entry]:
        with closing(connect_read_only(path)) as conn:
            return list(read_entries(conn))

    return left_as_found([path], read)


@dataclass
class _Capped:
    """S1's capped answers to one pair of uploads, of one kind, over the log."""

    batches: int = 0
    capped: int = 0
    over: int = 0
    quota: int = 0
    runs: set[str] = field(default_factory=set)
    seqs: list[int] = field(default_factory=list)


def capped_answers(data_dir: Path, role: str) -> list[str]:
    """S1's answers of 0 to pairs it did not evaluate because of its per-upload cap or the
    reach quota (core/rowledger.py), from its `twoserver.extras` and `twoserver.reach`
    entries, read-only: a line for the whole, then one for each pair of uploads and kind
    (its batches, the pairs capped and over the quota, the runs, the entries' seqs). What
    S1's operator looks at to spot a combiner asking past S1's bounds (docs/operations.md
    "Two servers and a combiner"); none for S2 or the combiner."""
    if role != "s1":
        return []
    entries = [e for e in _entries(log_path(data_dir, role))
               if e.action in ("twoserver.extras", "twoserver.reach")]  # fmt: skip
    by: dict[tuple[str, str, str], _Capped] = {}
    for e in entries:
        d = e.detail
        capped, over = _int(d.get("capped")), _int(d.get("over_quota"))
        members = d.get("members")
        if not (capped or over) or not isinstance(members, list) or len(members) != 2:
            continue
        a, b = sorted(str(m) for m in members)
        got = by.setdefault((a, b, e.action.rsplit(".", 1)[1]), _Capped())
        got.batches += 1
        got.capped += capped
        got.over += over
        got.quota = _int(d.get("quota"))
        got.runs.add(str(d.get("run", "?")))
        got.seqs.append(e.seq)
    if not by:
        return ["S1 answered no pair 0 past its per-upload cap or its reach quota."]
    capped = sum(g.capped for g in by.values())
    over = sum(g.over for g in by.values())
    batches = sum(g.batches for g in by.values())
    lines = [f"S1 answered 0, unevaluated, {capped + over} pairs in {batches} batches: {capped} "
             f"past its per-upload cap (a record paired otherwise in an earlier run), {over} "
             "beyond the reach quota (a combiner asking past S1's bounds; an honest one meets "
             "the cap only where its groups changed):"]  # fmt: skip
    for (a, b, kind), g in sorted(by.items()):
        quota = f" of {g.quota}" if kind == "reach" else ""
        lines.append(f"  {a} x {b}, {kind}: {g.batches} batches, {g.capped} capped, {g.over} "
                     f"over the quota{quota}; runs {', '.join(sorted(g.runs))}; entries "
                     f"{g.seqs[0]}-{g.seqs[-1]}")  # fmt: skip
    return lines


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


__all__ = ["RoleAudit", "Unreadable", "capped_answers", "log_path", "verify_log"]
