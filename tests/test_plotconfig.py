"""cli/plotconfig.py: matplotlib's config folder for the commands that plot, ours where
matplotlib has none it can write (MPLCONFIGDIR under a file here), removed as the block ends,
the variable as it was after; nothing changed where its folder is writable. (The SIGTERM
case, in a process of its own: tests/test_command_leftovers.py.)"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from blindmatch.cli import plotconfig


@pytest.fixture
def unimported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """matplotlib as if not imported yet (its folders not picked), a temp dir of the test's."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


def test_where_mplconfigdir_cannot_be_written_the_block_has_a_folder_of_ours_removed_after(
    unimported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("MPLCONFIGDIR", str(a_file / "mpl"))
    assert plotconfig.needed()
    with plotconfig.own_config():
        (folder,) = unimported.iterdir()
        assert folder.name.startswith(plotconfig.PREFIX) and folder.is_dir()
        assert os.environ["MPLCONFIGDIR"] == str(folder)
    assert list(unimported.iterdir()) == []
    assert os.environ["MPLCONFIGDIR"] == str(a_file / "mpl")
    with pytest.raises(RuntimeError), plotconfig.own_config():
        raise RuntimeError("the command failed")
    assert list(unimported.iterdir()) == []


def test_where_matplotlibs_folder_is_writable_or_picked_already_nothing_changes(
    unimported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    assert not plotconfig.needed()
    with plotconfig.own_config():
        assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "mpl")
        assert list(unimported.iterdir()) == []
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl" / "a-file"))
    (tmp_path / "mpl" / "a-file").write_text("")
    monkeypatch.setitem(sys.modules, "matplotlib", object())  # (imported: its folders picked)
    assert not plotconfig.needed()
