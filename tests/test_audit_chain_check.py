"""`admin check` (storage/integrity.py) and a role's check (storage/role_check.py) say the
same of an audit chain and its key (storage/audit_log.py `chain_problems`): a key that no
entry verifies with is the wrong key, even where an entry is also missing from the log."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.storage.role_check import check_role_dir
from blindmatch.matcher.storage.twoserver_audit import RoleAudit


def test_a_role_check_names_a_wrong_key_even_where_an_entry_is_also_missing(
    tmp_path: Path,
) -> None:
    kept = RoleAudit(tmp_path, "s1")
    try:
        for n in range(3):
            detail = {"role": "s1", "n": n}
            kept.log.append(audit.Event("north", "twoserver.query", member="north", detail=detail))
    finally:
        kept.close()
    log, key = tmp_path / "twoserver-s1.sqlite", tmp_path / "twoserver-s1.audit.key"
    with closing(sqlite3.connect(log)) as db, db:
        db.execute("DELETE FROM audit WHERE seq=2")
    key.write_bytes(b"k" * 32)  # a key, but not the one the log was written with
    problems = [p for p in check_role_dir(tmp_path, "s1").problems if p.startswith("audit log")]
    assert problems == [
        f"audit log {log}: none of its 2 entries verifies with {key}: it is not the key the "
        "log was written with; restore the right one"
    ]
