"""`blindmatch admin check|backup|restore` given a path that cannot be used as given (one that
is there and must be new, one not there, a file for a folder, a key that is not one): bad
input, exit 2, an `Error:` line naming the flag and the path, and nothing written (the
folder that is there left as it was, no staging folder beside it). A real role data dir,
made by the role's own storage (no server needed for a path check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.matcher.core import audit
from blindmatch.matcher.storage.role_store import RoleStore
from blindmatch.matcher.storage.twoserver_audit import RoleAudit


def admin(*args: str) -> int:
    return main(["admin", *args])


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A role S1's data dir with one audit entry, backed up: (the backup, its audit key)."""
    s1 = tmp_path / "s1"
    s1.mkdir(mode=0o700)
    RoleStore(s1, "s1").close()
    log = RoleAudit(s1, "s1")
    log.log.append(audit.Event("operator", "twoserver.restore", detail={}))
    log.close()
    backup, key = tmp_path / "s1.backup", tmp_path / "s1.key"
    assert admin("backup", "--data-dir", str(s1), "--out", str(backup),
                 "--key-out", str(key)) == 0  # fmt: skip
    return backup, key


def test_restore_onto_a_folder_that_is_there_exits_2_and_leaves_it_as_it_was(
    tmp_path: Path, backed_up: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    backup, key = backed_up
    there = tmp_path / "there"
    there.mkdir()
    (there / "kept").write_text("the operator's")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    capsys.readouterr()
    restore = ["restore", "--backup", str(backup), "--audit-key", str(key), "--no-previous"]
    for dest, said in (
        (there, f"--data-dir {there}: already exists (left as it is); move it aside"),
        (a_file, f"--data-dir {a_file}: already exists"),
        (a_file / "s1", f"--data-dir {a_file / 's1'}: {a_file} is a file, not a folder"),
    ):
        assert admin(*restore, "--data-dir", str(dest)) == 2
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and said in err and "Traceback" not in err
    assert [p.name for p in there.iterdir()] == ["kept"]
    assert (there / "kept").read_text() == "the operator's" and a_file.read_text() == "x"
    # A backup, a replaced dir or an audit key given wrongly: the same, nothing made.
    nope, new = tmp_path / "nope", ["--data-dir", str(tmp_path / "new")]
    for args, said in (
        (["--backup", str(nope), "--audit-key", str(key), "--no-previous"],
         f"--backup {nope}: not there"),
        (["--backup", str(a_file), "--audit-key", str(key), "--no-previous"],
         f"--backup {a_file}: a file, not a folder"),
        (["--backup", str(backup), "--audit-key", str(key), "--previous", str(nope)],
         f"--previous {nope}: not there"),
        (["--backup", str(backup), "--audit-key", str(a_file), "--no-previous"],
         f"--audit-key {a_file}: holds 1 bytes, not an audit key"),
    ):  # fmt: skip
        assert admin("restore", *args, *new) == 2
        assert said in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file", "s1", "s1.backup", "s1.key", "there"]  # fmt: skip


def test_backup_and_check_given_a_path_that_is_there_or_not_exit_2(
    tmp_path: Path, backed_up: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    backup, key = backed_up
    s1, a_file = tmp_path / "s1", tmp_path / "a-file"
    a_file.write_text("x")
    capsys.readouterr()
    for args, said in (
        (["backup", "--data-dir", str(s1), "--out", str(backup)],
         f"--out {backup}: already exists; back up to a new folder"),
        (["backup", "--data-dir", str(s1), "--out", str(a_file / "b")],
         f"--out {a_file / 'b'}: {a_file} is a file, not a folder"),
        (["backup", "--data-dir", str(s1), "--out", str(tmp_path / "b"), "--key-out", str(key)],
         f"--key-out {key}: already exists; choose a new file"),
        (["backup", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "b")],
         f"--data-dir {tmp_path / 'nope'}: not there"),
        (["backup", "--data-dir", str(backup / "twoserver-s1-held"), "--out",
          str(tmp_path / "b")], "not a blindmatch data dir (no blindmatch.sqlite)"),
        (["check", "--data-dir", str(tmp_path / "nope")], "not there (no such folder)"),
        (["check", "--data-dir", str(a_file)], f"--data-dir {a_file}: a file, not a folder"),
    ):  # fmt: skip
        assert admin(*args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and said in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s1", "s1.backup", "s1.key"]
