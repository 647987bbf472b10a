"""S1's and S2's held store records its layout (storage/role_store.py `LAYOUT`, the SQLite
header's user_version): a store of a layout this blindmatch does not know, written by a
newer one, refuses the role's start, saying so, and is left byte for byte as it was."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest

from blindmatch.cli.app import main
from blindmatch.matcher.core import audit
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.role_check import check_role_dir
from blindmatch.matcher.storage.role_store import LAYOUT, RoleStore
from blindmatch.matcher.storage.sqlite import layout_of
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from tests.support import files_of, set_layout

ARRAYS = [("shares_0", np.arange(64, dtype=np.uint8).reshape(4, 16))]


def _held(data_dir: Path, role: str = "s2", *, logged: bool = False) -> Path:
    """A role's held store with one upload in it (`logged`: in its audit log too, as the
    role logs it), closed: its database file."""
    log = RoleAudit(data_dir, role) if logged else None
    store = RoleStore(data_dir, role)
    try:
        file, digest = store.write(ARRAYS)
        if log is not None:
            detail = {"role": role, "sha256": digest}
            log.log.append(audit.Event("north", "twoserver.upload", member="north", detail=detail))
        store.put("north", file, 4, {}, ARRAYS, digest)
    finally:
        store.close()
        if log is not None:
            log.close()
    return store.path


def test_a_store_is_made_at_this_layout_and_one_from_before_the_marker_opens(
    tmp_path: Path,
) -> None:
    db = _held(tmp_path)
    assert layout_of(db) == LAYOUT == 1
    set_layout(db, 0)  # as a store written before the layout was recorded
    store = RoleStore(tmp_path, "s2")
    try:
        assert sorted(store.load(lambda meta, arrays: arrays).held) == ["north"]
    finally:
        store.close()


def test_a_store_of_a_newer_layout_refuses_the_start_and_is_left_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _held(tmp_path / "s2")
    set_layout(db, LAYOUT + 1)
    before = files_of(tmp_path / "s2")
    with pytest.raises(StartupRefused) as refused:
        RoleStore(tmp_path / "s2", "s2")
    said = str(refused.value)
    assert f"{db}: held store layout {LAYOUT + 1}, written by a newer blindmatch" in said
    assert f"this one knows layout {LAYOUT} and older" in said
    assert "run the blindmatch that wrote it (or a newer one). To roll back" in said
    assert files_of(tmp_path / "s2") == before
    # The command line: exit 2 with that message, the store as it was.
    keys = {}
    for name in ("parties", "members"):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(secrets.token_urlsafe(16) + "\n")
        keys[name].chmod(0o600)
    code = main(["two-server", "role", "--role", "s2", "--listen", "127.0.0.1:0",
                 "--key-file", str(keys["parties"]), "--member-key-file", str(keys["members"]),
                 "--data-dir", str(tmp_path / "s2")])  # fmt: skip
    assert code == 2
    assert "written by a newer blindmatch" in capsys.readouterr().err
    started = files_of(tmp_path / "s2")  # (its audit log made)
    assert {k: v for k, v in started.items() if "held" in k} == before
    # `admin check` (read-only) says the same, and reads no further.
    report = check_role_dir(tmp_path / "s2", "s2", require_key=False)
    assert f"{db}: held store layout {LAYOUT + 1}, written by a newer blindmatch" in report.render()
    assert not report.ok
    # no counts of what was never read (it said `0 uploads verified ..., 0 pairs`: opsleft)
    head = report.render().splitlines()[0]
    assert head.startswith(f"{tmp_path / 's2'} (two-server role s2): held store not read (newer")
    assert "uploads verified" not in head and "pairs" not in head
    assert report.to_dict()["held_not_read"] == "newer layout"
    assert files_of(tmp_path / "s2") == started  # (no -wal or -shm made: read as immutable)


def test_a_check_or_backup_of_a_stopped_role_leaves_its_dir_byte_for_byte(tmp_path: Path) -> None:
    """A read-only SQLite reader of the held store or the audit log (WAL mode) made a -wal
    and a -shm beside it, and the backup took the held store's write lock."""
    _held(tmp_path / "s2", logged=True)
    before = files_of(tmp_path / "s2")
    report = check_role_dir(tmp_path / "s2", "s2")
    assert report.ok and report.uploads_checked == 1, report.render()
    assert main(["admin", "check", "--data-dir", str(tmp_path / "s2")]) == 0
    assert files_of(tmp_path / "s2") == before
    assert (
        main(["admin", "backup", "--data-dir", str(tmp_path / "s2"), "--out", str(tmp_path / "b")])
        == 0
    )
    assert files_of(tmp_path / "s2") == before


def test_a_held_store_of_a_newer_layout_is_neither_backed_up_nor_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin backup` of it copied it and sealed the copy (written to a store this one does
    not know), and `admin restore` from a backup holding it copied the backup into place
    before opening it; both fail with exit 1. Each refuses now, before it writes anything
    (exit 2, the file named)."""
    data_dir, backups = tmp_path / "s2", tmp_path / "backups"
    db = _held(data_dir, logged=True)
    assert main(["admin", "backup", "--data-dir", str(data_dir), "--out", str(backups / "s2")]) == 0
    capsys.readouterr()
    newer = f"held store layout {LAYOUT + 1}, written by a newer blindmatch"
    set_layout(db, LAYOUT + 1)
    before = files_of(data_dir)
    later = tmp_path / "later"
    assert main(["admin", "backup", "--data-dir", str(data_dir), "--out", str(later / "s2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {db}: {newer}") and "(nothing written)" in err
    assert not later.exists()  # (no backup, no partial one, not even the folder above)
    assert files_of(data_dir) == before
    # A backup holding a store of a newer layout: nothing of the restore is made.
    held = backups / "s2" / db.name
    set_layout(held, LAYOUT + 1)
    kept = files_of(backups)
    restored = tmp_path / "restored"
    assert main(["admin", "restore", "--backup", str(backups / "s2"), "--data-dir",
                 str(restored / "s2"), "--role", "s2", "--no-previous"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {held}: {newer}") and "restore it with that blindmatch" in err
    assert not restored.exists()
    assert files_of(backups) == kept


def test_a_restore_leaves_the_previous_dir_and_the_backup_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin restore --previous` read the moved-aside dir's audit log (WAL mode) through a
    read-only SQLite reader, which made a -wal and a -shm beside it. Both it and the backup
    are left as they were; what the role logged after the backup is replayed as before."""
    data_dir, backup = tmp_path / "s2", tmp_path / "backup"
    _held(data_dir, logged=True)
    assert main(["admin", "backup", "--data-dir", str(data_dir), "--out", str(backup)]) == 0
    log = RoleAudit(data_dir, "s2")
    try:  # (after the backup: replayed)
        detail = {"role": "s2", "project": "p", "records": 3}
        log.log.append(audit.Event("north", "twoserver.query", member="north", detail=detail))
    finally:
        log.close()
    aside = tmp_path / "s2.old"
    data_dir.rename(aside)
    before, kept = files_of(aside), files_of(backup)
    capsys.readouterr()
    assert main(["admin", "restore", "--backup", str(backup), "--data-dir", str(data_dir),
                 "--role", "s2", "--previous", str(aside)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    # (counts in words: it said `1 uploads held`, `1 audit entries`, `1 queries`: upgradewalk)
    assert "s2's data dir" in said and ": 1 upload held, 1 of them sealed" in said
    assert f"Replayed 1 audit entry of {aside}" in said
    assert "0 restored uploads dropped" in said and "1 query counted again." in said
    assert files_of(aside) == before
    assert files_of(backup) == kept
    checked = check_role_dir(data_dir, "s2")
    assert checked.ok
    assert f"{data_dir} (two-server role s2): 1 upload verified (64 bytes hashed), 0 pairs " \
        "evaluated in the pair budget, 1 upload restored from a backup (sealed), 1 query " \
        "counted, " in checked.render()  # fmt: skip
