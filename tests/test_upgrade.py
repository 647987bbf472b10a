"""Upgrading a data dir, and rolling back (docs/operations.md "Upgrade"; walked with the
2026-12-04 and 2026-12-06 versions, upgradewalk).

A start on a data dir an older blindmatch wrote brings its stores up to date (tables,
columns, the layout marker) and says in the log what it added; a store a newer blindmatch
wrote is refused naming the way back: this blindmatch's `admin restore` of the backup taken
before the upgrade, with what was done since replayed from the refused dir's audit log. The
older data dirs are made here by hand from this version's (what an older one lacked taken
out), as they cannot be written by old code in a test."""

from __future__ import annotations

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import grpc
import pytest

from blindmatch.cli.app import main
from blindmatch.client.errors import BlindmatchError
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc.twoserver_holds import holds_at
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.role_store import RoleStore
from tests.support import ADMIN_TOKEN, Clock, set_layout, start

UPGRADED = "written by an older blindmatch, brought up to date at this start (layout 1): added "


def _served(data_dir: Path) -> dict[str, str]:
    """A data dir a matcher served, with a project in it, the matcher stopped: the tokens."""
    matcher = start(data_dir, Clock())
    try:
        with matcher.operator() as op:
            return op.create_project("trial", ["north", "south"]).tokens
    finally:
        matcher.server.stop(grace=None)


def _as_an_older_blindmatch_left_it(data_dir: Path) -> None:
    """What the 2026-12-04 version's data dir lacked: `retired_tokens` (2026-12-07), the
    layout markers (blindmatch.sqlite's 2026-12-06, index.sqlite's 2026-12-07); and a column
    older still (runs.tasks_total), as a data dir from before it lacks it."""
    files = DataDir(data_dir)
    with closing(sqlite3.connect(files.db)) as conn:
        conn.execute("DROP TABLE retired_tokens")
        conn.execute("ALTER TABLE runs DROP COLUMN tasks_total")
        conn.commit()
    set_layout(files.db, 0)
    set_layout(files.index_db, 0)


def _upgrade_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if UPGRADED in r.getMessage()]


def test_a_start_on_an_older_blindmatchs_data_dir_says_in_the_log_what_it_added(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    data_dir = tmp_path / "d"
    tokens = _served(data_dir)  # (a new data dir: nothing said of an upgrade)
    _as_an_older_blindmatch_left_it(data_dir)
    files = DataDir(data_dir)
    matcher = start(data_dir, Clock())
    try:
        with matcher.member(tokens["north"]) as north:
            assert north.describe("trial").members  # served as before
    finally:
        matcher.server.stop(grace=None)
    assert _upgrade_lines(caplog) == [
        f"{files.db}: {UPGRADED}table retired_tokens, the layout marker, column runs.tasks_total",
        f"{files.index_db}: {UPGRADED}the layout marker",
    ]
    caplog.clear()
    matcher = start(data_dir, Clock())  # up to date now: nothing to say
    matcher.server.stop(grace=None)
    assert _upgrade_lines(caplog) == []
    assert any("matcher listening" in r.getMessage() for r in caplog.records)


def test_a_rolled_back_matcher_refuses_the_newer_store_naming_the_restore_that_brings_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, backup, restored = tmp_path / "d", tmp_path / "backup", tmp_path / "restored"
    tokens = _served(data_dir)
    assert main(["admin", "backup", "--data-dir", str(data_dir), "--out", str(backup)]) == 0
    matcher = start(data_dir, Clock())  # upgraded: the newer blindmatch revokes a token
    try:
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
    finally:
        matcher.server.stop(grace=None)
    set_layout(DataDir(data_dir).db, 2)  # and it wrote a layout this one does not know
    capsys.readouterr()
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "written by a newer blindmatch" in err
    assert (
        "run the blindmatch that wrote it (or a newer one). To roll back to this one, restore "
        "the backup taken before the upgrade with this one" in err
    )
    named = f"blindmatch admin restore --backup BACKUP --data-dir NEW_DIR --previous {data_dir}"
    assert named in err
    assert "move the store aside" not in err  # (a matcher on a new dir holds no project)
    # The restore it names works on the refused dir, and makes the revocation again.
    assert main(
        ["admin", "restore", "--backup", str(backup), "--data-dir", str(restored),
         "--previous", str(data_dir)]
    ) == 0  # fmt: skip
    assert "token.revoke trial/north" in capsys.readouterr().out
    matcher = start(restored, Clock())
    try:
        with matcher.member(tokens["south"]) as south:
            assert south.describe("trial").members
        with matcher.member(tokens["north"]) as north, pytest.raises(BlindmatchError):
            north.describe("trial")
    finally:
        matcher.server.stop(grace=None)


def test_a_rolled_back_role_refuses_the_newer_held_store_naming_its_restore(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "s1"
    RoleStore(folder, "s1").close()
    held = folder / "twoserver-s1-held.sqlite"
    set_layout(held, 2)
    with pytest.raises(StartupRefused) as refused:
        RoleStore(folder, "s1")
    said = str(refused.value)
    assert f"{held}: held store layout 2, written by a newer blindmatch" in said
    assert (
        f"`blindmatch admin restore --role s1 --backup BACKUP --data-dir NEW_DIR --previous "
        f"{folder}`" in said
    )
    assert "have every member upload again" not in said


def test_an_s1_older_than_the_matchers_calls_is_named_as_an_older_blindmatch() -> None:
    """A 2026-12-04 S1 or S2 knows no `Holds`: the matcher's start said only `S1 (ADDR): Method
    not found!` (walked, upgradewalk). A server that serves none of the roles' calls stands
    for it here (grpc answers UNIMPLEMENTED for a method it does not know, as the old role
    did)."""
    older = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = older.add_insecure_port("127.0.0.1:0")
    older.start()
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as kept:
            held, why = holds_at(address, "S1", "a-key", [], kept)
    finally:
        older.stop(grace=None)
    assert held is None
    assert why == (
        f"S1 ({address}) does not know the call Holds (UNIMPLEMENTED): it runs an older "
        "blindmatch than the matcher's; upgrade the matcher, S1 and S2 together to the "
        'matcher\'s version (docs/operations.md "Upgrade")'
    )


def test_a_roles_held_store_from_before_the_layout_marker_is_stamped_at_its_first_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was (srvcarry): a role's held store written before the marker (user_version 0) was
    opened as layout 1 but never stamped, so a later downgrade check could not tell what
    wrote it. Now stamped at the first start, and said in the log as the matcher's is."""
    folder = tmp_path / "s2"
    RoleStore(folder, "s2").close()
    held = folder / "twoserver-s2-held.sqlite"
    set_layout(held, 0)  # as a role from before the marker left it
    with caplog.at_level(logging.INFO, "blindmatch.matcher"):
        RoleStore(folder, "s2").close()
    with closing(sqlite3.connect(held)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert _upgrade_lines(caplog) == [f"{held}: {UPGRADED}the layout marker"]
    caplog.clear()
    with caplog.at_level(logging.INFO, "blindmatch.matcher"):
        RoleStore(folder, "s2").close()  # the next start: nothing more to say
    assert _upgrade_lines(caplog) == []
