"""The matcher's store records its layout (storage/project_store.py `LAYOUT`, blindmatch.sqlite's
header's user_version, as the roles' held store does): a data dir whose store a newer
blindmatch wrote (a layout, a migration, this one does not know) refuses `serve` at start,
saying so, and is left byte for byte as it was; `admin check` says the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.project_store import LAYOUT
from blindmatch.matcher.storage.sqlite import layout_of
from blindmatch.matcher.storage.store import Store
from tests.support import ADMIN_TOKEN, Clock, files_of, set_layout, start


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


def test_a_store_of_a_newer_layout_refuses_serve_and_is_left_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "d"
    db = _served(data_dir)
    set_layout(db, LAYOUT + 1)
    cut_short = data_dir / "tmp" / "upload-cut-short"  # (a start empties tmp/)
    cut_short.write_bytes(b"x")
    cut_short.chmod(0o600)
    before = files_of(data_dir)
    with pytest.raises(StartupRefused) as refused:
        Store(data_dir)
    said = str(refused.value)
    assert f"{db}: store layout {LAYOUT + 1}, written by a newer blindmatch" in said
    assert f"this one knows layout {LAYOUT} and older" in said
    assert "upgrade blindmatch, or move the store aside" in said
    assert files_of(data_dir) == before
    # The command line: exit 2 with that message, the data dir as it was.
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {db}: store layout {LAYOUT + 1}, written by a newer")
    assert "Traceback" not in err
    assert files_of(data_dir) == before
    # `admin check` (read-only) says the same, reads no further, and changes nothing.
    report = check_data_dir(data_dir)
    assert f"{db}: store layout {LAYOUT + 1}, written by a newer blindmatch" in report.render()
    assert not report.ok
    assert files_of(data_dir) == before
    assert main(["admin", "check", "--data-dir", str(data_dir)]) == 1
    assert "written by a newer blindmatch" in capsys.readouterr().err
    assert files_of(data_dir) == before
