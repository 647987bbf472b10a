"""The matcher's store records its layout (storage/project_store.py `LAYOUT`, blindmatch.sqlite's
header's user_version, as the roles' held store does), and so does the real-time side's
index.sqlite (index_store.py `LAYOUT`; before, it had no marker, and a newer blindmatch's
index.sqlite was opened and written to): a data dir whose store or index a newer blindmatch
wrote (a layout, a migration, this one does not know) refuses `serve` at start, saying so,
and is left byte for byte as it was; `admin check` says the same."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.storage import index_store, project_store
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.index_store import IndexStore
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.project_store import LAYOUT
from blindmatch.matcher.storage.sqlite import layout_of
from blindmatch.matcher.storage.store import Store
from tests.support import ADMIN_TOKEN, Clock, files_of, set_layout, start

# The data dir's two stores, each with the layout this blindmatch knows.
each_store = pytest.mark.parametrize(
    "name, known",
    [("blindmatch.sqlite", project_store.LAYOUT), ("index.sqlite", index_store.LAYOUT)],
    ids=["store", "index"],
)


def _served(data_dir: Path) -> Path:
    """A data dir a matcher served, with a project in it, the matcher stopped: its store."""
    matcher = start(data_dir, Clock())
    try:
        with matcher.operator() as op:
            op.create_project("trial", ["north", "south"])
    finally:
        matcher.server.stop(grace=None)
    return DataDir(data_dir).db


def test_a_store_is_made_at_this_layout_and_one_from_before_the_marker_opens(
    tmp_path: Path,
) -> None:
    db = _served(tmp_path / "d")
    assert layout_of(db) == LAYOUT == 1
    set_layout(db, 0)  # as a store written before the layout was recorded
    store = Store(tmp_path / "d")
    try:
        assert store.members("trial") == ["north", "south"]
    finally:
        store.close()
    assert layout_of(db) == LAYOUT  # (recorded at that start)


def _user_version(db: Path) -> int:
    """The layout marker as the file holds it (`layout_of` reads a 0 as layout 1)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_index_sqlite_is_made_at_its_layout_and_one_from_before_the_marker_is_stamped(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "d"
    _served(data_dir)
    index = DataDir(data_dir).index_db
    assert _user_version(index) == index_store.LAYOUT == 1
    set_layout(index, 0)  # as every index.sqlite written before it had a marker
    matcher = start(data_dir, Clock())
    try:
        with matcher.operator() as op:
            assert [p.project for p in op.list_projects()] == ["trial"]
    finally:
        matcher.server.stop(grace=None)
    assert _user_version(index) == index_store.LAYOUT  # (recorded at that start)


@each_store
def test_a_store_of_a_newer_layout_refuses_serve_and_is_left_unchanged(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    known: int,
) -> None:
    data_dir = tmp_path / "d"
    db = _served(data_dir).parent / name
    set_layout(db, known + 1)
    cut_short = data_dir / "tmp" / "upload-cut-short"  # (a start empties tmp/)
    cut_short.write_bytes(b"x")
    cut_short.chmod(0o600)
    before = files_of(data_dir)
    with pytest.raises(StartupRefused) as refused:
        Store(data_dir)  # (the matcher's start opens it first)
    said = str(refused.value)
    assert f"{db}: store layout {known + 1}, written by a newer blindmatch" in said
    assert f"this one knows layout {known} and older" in said
    assert "The matcher will not start on it and has changed nothing: run the blindmatch" in said
    assert files_of(data_dir) == before
    if name == "index.sqlite":  # and its own opening, the real-time side's
        with pytest.raises(StartupRefused, match="written by a newer blindmatch"):
            IndexStore(data_dir)
        assert files_of(data_dir) == before
    # The command line: exit 2 with that message, the data dir as it was.
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {db}: store layout {known + 1}, written by a newer")
    assert "Traceback" not in err
    assert files_of(data_dir) == before
    # `admin check` (read-only) says the same, reads no further, and changes nothing.
    report = check_data_dir(data_dir)
    assert f"{db}: store layout {known + 1}, written by a newer blindmatch" in report.render()
    assert not report.ok
    assert files_of(data_dir) == before
    assert main(["admin", "check", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "written by a newer blindmatch" in err
    # no summary of what was never read (it said `0 projects, ..., 0 audit entries`: opsleft)
    assert err.startswith(f"{data_dir}: not read (newer layout)\n"), err
    assert "projects" not in err and "audit entries" not in err
    assert files_of(data_dir) == before
    assert main(["admin", "check", "--data-dir", str(data_dir), "--json"]) == 1
    said = json.loads(capsys.readouterr().out)
    assert said["not_read"] == "newer layout" and not said["ok"]


@each_store
def test_a_store_of_a_newer_layout_refuses_the_look_up_server_and_is_left_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, known: int
) -> None:
    """`lookup-server --data-dir` read index.sqlite whatever its layout (and made the data
    dir's lookup.key first); it refuses now, as `serve` does, before it writes or serves."""
    data_dir = tmp_path / "d"
    db = _served(data_dir).parent / name
    set_layout(db, known + 1)
    before = files_of(data_dir)
    assert "lookup.key" not in before  # (a matcher without look-up servers made none)
    try:
        running = create_lookup_server("127.0.0.1:0", data_dir, 0, 1, wait=True)
    except StartupRefused as exc:
        said = str(exc)
    else:
        running.stop(None)
        pytest.fail(f"a look-up server started on {db}, of layout {known + 1}")
    assert f"{db}: store layout {known + 1}, written by a newer blindmatch" in said
    assert f"this one knows layout {known} and older" in said
    assert "The look-up server will not start on it and has changed nothing" in said
    assert files_of(data_dir) == before
    argv = ["lookup-server", "--data-dir", str(data_dir), "--shard", "0/1", "--listen"]
    assert main([*argv, "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {db}: store layout {known + 1}, written by a newer")
    assert "Traceback" not in err
    assert files_of(data_dir) == before


def test_a_look_up_server_reads_an_index_from_before_the_marker_and_leaves_it_unstamped(
    tmp_path: Path,
) -> None:
    """A look-up server only reads: an index.sqlite from before the layout marker (0) is
    read as layout 1 and left as it is (the matcher records the layout at its start)."""
    data_dir = tmp_path / "d"
    _served(data_dir)
    index = DataDir(data_dir).index_db
    set_layout(index, 0)
    running = create_lookup_server("127.0.0.1:0", data_dir, 0, 1, wait=True)
    try:
        assert running.shards.ready and not running.shards.failed
    finally:
        running.stop(None)
    assert _user_version(index) == 0


@each_store
def test_a_data_dir_of_a_newer_layout_is_not_backed_up_and_no_partial_backup_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, known: int
) -> None:
    """`admin backup` copied a newer blindmatch's store, then failed the copy's check (exit
    1); it refuses now, naming the file, before it makes anything (exit 2)."""
    data_dir = tmp_path / "d"
    db = _served(data_dir).parent / name
    set_layout(db, known + 1)
    before = files_of(data_dir)
    backups = tmp_path / "backups"
    assert main(["admin", "backup", "--data-dir", str(data_dir), "--out", str(backups / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {db}: store layout {known + 1}, written by a newer blindmatch")
    assert "back it up with that blindmatch (nothing written)" in err
    assert not backups.exists()  # (no backup, no partial one, not even the folder above)
    assert files_of(data_dir) == before
