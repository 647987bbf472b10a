"""A two-server role's audit log (docs/operations.md "Two servers and a combiner"): the
matcher's own append-only keyed chain (storage/audit_log.py, core/audit.py), in a SQLite file
of its own under the role's `--data-dir`: `twoserver-ROLE.sqlite`, its key beside it in
`twoserver-ROLE.audit.key` (made with the first entry; owner-only). What it logs: each
upload a role holds (the member, records, CLKs, the SHA-256 of the arrays it holds, never
the arrays) and each run a role takes part in (who asked, the members, the pairs, the links
at the combiner), and each batch refused for evaluating a pair again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from blindmatch.matcher.storage.audit_log import SCHEMA, AuditLog, entry_count, read_key
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


__all__ = ["RoleAudit"]
