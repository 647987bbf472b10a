"""What an operator walking docs/operations.md met (opswalk, 2026-12-07): each against a real
matcher on loopback or a real data dir, through the commands the doc gives."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest

from benchmarks.knownclks import population, write
from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.errors import RejectedError
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from tests import support
from tests.support import ADMIN_TOKEN, Matcher

DISK_REFUSAL = "refused an upload of"
RESERVE = 1 << 60  # more than any disk has free


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- admin backup --key-out --------------------------------------------------------------------


def test_a_key_out_in_folders_not_there_yet_is_written_into_them_owner_only(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The doc's `--key-out /keys/audit-DATE.key` on a host with no /keys: the backup was made
    and verified, then failed at the key (`Error: ...: No such file or directory`, exit 2),
    while `--out` made its own missing folders."""
    key_out = tmp_path / "keys" / "2026" / "audit.key"
    argv = ["admin", "backup", "--data-dir", str(matcher.data_dir), "--out",
            str(tmp_path / "backups" / "b1"), "--key-out", str(key_out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert key_out.read_bytes() == (matcher.data_dir / "audit.key").read_bytes()
    assert mode_of(key_out) == 0o600
    assert mode_of(key_out.parent) == mode_of(key_out.parent.parent) == 0o700
    assert (tmp_path / "backups" / "b1" / "blindmatch.sqlite").is_file()


def test_a_key_out_below_a_file_is_refused_before_anything_is_written(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused first, naming the flag, not after a whole backup with the OS's words."""
    plain = tmp_path / "notes.txt"
    plain.write_text("not a folder\n")
    out = tmp_path / "b2"
    argv = ["admin", "backup", "--data-dir", str(matcher.data_dir), "--out", str(out),
            "--key-out", str(plain / "audit.key")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--key-out {plain / 'audit.key'}: {plain} is not a folder (nothing written)" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b2")) == []


# -- audit verify --anchor ---------------------------------------------------------------------


def test_an_anchor_past_the_logs_end_says_where_the_log_ends(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It said `(the log was cut short after it)` of an entry the log never reached, and
    `(1 problems)`."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    with matcher.operator() as op:
        head = op.verify_audit(None).head_seq + 1  # (that verify is logged: one entry more)
    argv = ["audit", "verify", "--server", matcher.target, "--anchor", f"{head + 70}:{'0' * 64}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        f"anchor entry {head + 70} is not in the log (the log ends at entry {head}: the "
        "entries after it were removed, or the anchor is another log's)"
    ) in err
    assert "Error: the audit log fails verification (1 problem)\n" in err


# -- serve --min-free-mb ---------------------------------------------------------------------


@pytest.mark.server
def test_a_reserve_over_the_free_disk_is_said_at_start_and_each_refusal_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload refused for `--min-free-mb` was told to the member only ("ask the operator
    to free space"): the matcher's log said nothing, at start or at the refusal."""
    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, min_free_bytes=RESERVE)
    try:
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("every upload will be refused" in line for line in said), said
        assert any("--min-free-mb" in line for line in said)
        matcher = Matcher(server, tmp_path / "data", ADMIN_TOKEN)
        with matcher.operator() as op:
            tokens = op.create_project("trial", ["north", "south"]).tokens
        caplog.clear()
        with (
            matcher.member(tokens["north"]) as member,
            pytest.raises(RejectedError, match="not enough disk space on the matcher"),
        ):
            member.upload("trial", write(population(2, 50, 0.3, seed=3)[0], tmp_path / "n"))
        refused = [r for r in caplog.records if DISK_REFUSAL in r.getMessage()]
        assert [r.levelno for r in refused] == [logging.WARNING]
        assert "free space there or lower --min-free-mb" in refused[0].getMessage()
    finally:
        server.stop(grace=None)


@pytest.mark.server
def test_a_reserve_under_the_free_disk_says_nothing_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, min_free_bytes=1)
    try:
        assert not [r for r in caplog.records if "--min-free-mb" in r.getMessage()]
    finally:
        server.stop(grace=None)


@pytest.mark.server
def test_a_write_a_full_disk_refuses_is_logged_for_the_operator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real full disk: the caller was told `the matcher's disk is full`, and the matcher's
    log, where the operator who must free the space looks, said nothing at all."""
    with support.small_disk(tmp_path / "small-disk", "3m") as disk:
        server = create_server("127.0.0.1:0", disk / "data", ADMIN_TOKEN)
        try:
            matcher = Matcher(server, disk / "data", ADMIN_TOKEN)
            filler = support.fill_disk(disk)
            caplog.set_level(logging.INFO, logger="blindmatch.matcher")
            with (
                matcher.operator() as op,
                pytest.raises(RejectedError, match="the matcher's disk is full"),
            ):
                op.create_project("trial", ["north", "south"])
            said = [r for r in caplog.records if "the data dir's disk is full" in r.getMessage()]
            assert [r.levelno for r in said] == [logging.ERROR]
            assert "free space on its filesystem" in said[0].getMessage()
            filler.unlink()
            with matcher.operator() as op:  # space again: the same call goes through
                assert op.create_project("trial", ["north", "south"]).project == "trial"
        finally:
            server.stop(grace=None)


# -- a damaged upload, uploaded again --------------------------------------------------------


@pytest.mark.server
def test_a_damaged_upload_sent_again_from_the_same_folder_is_stored_anew(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin check` and the failed run say `south must upload its data again (blindmatch
    upload)`; south ran `blindmatch upload` on the same ENCODED folder, whose upload id the
    matcher knew, and was told `the matcher had it already, nothing was stored twice`: the
    damaged file stayed current, and every run failed again."""
    token = tmp_path / "south.token"
    token.write_text(project.tokens["south"] + "\n")
    token.chmod(0o600)
    folder = tmp_path / "south.encoded"
    write(population(2, 50, 0.3, seed=4)[1], folder)
    argv = ["upload", str(folder), "--project", "trial", "--token-file", str(token),
            "--server", matcher.target]  # fmt: skip
    assert main(argv) == 0
    (first,) = (matcher.data_dir / "clks").iterdir()
    with first.open("r+b") as fh:  # a flipped byte, its size kept
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert not check_data_dir(matcher.data_dir).ok
    capsys.readouterr()

    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "nothing was stored twice" not in said
    (stored,) = (matcher.data_dir / "clks").iterdir()
    assert stored.name != first.name
    report = check_data_dir(matcher.data_dir)
    assert report.ok, report.render()
    assert main(argv) == 0  # and sent once more, the stored one, whole, is acknowledged again
    assert "nothing was stored twice" in capsys.readouterr().out


@pytest.mark.server
def test_a_backup_of_a_data_dir_with_a_damaged_upload_says_where_the_damage_is(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said only `the copy failed its integrity check`, naming files of a staging folder
    it had removed: the operator took the backup for broken, not the data dir."""
    with matcher.member(project.tokens["north"]) as north:
        north.upload("trial", write(population(2, 50, 0.3, seed=4)[0], tmp_path / "n"))
    (stored,) = (matcher.data_dir / "clks").iterdir()
    stored.write_bytes(bytes(stored.stat().st_size))  # its size kept, its bytes not
    out = tmp_path / "b"
    assert main(["admin", "backup", "--data-dir", str(matcher.data_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"so no backup was made (no --out {out})" in err
    assert f"`blindmatch admin check --data-dir {matcher.data_dir}`" in err
    assert "north must upload again" in err
    assert not out.exists()


# -- admin restore of a matcher's backup -----------------------------------------------------


def test_admin_restore_of_a_matchers_backup_says_how_to_restore_it(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said only `a matcher's backup is restored by copying it`: how, and with which key,
    was on a page the operator had not found."""
    backup = tmp_path / "b"
    assert main(["admin", "backup", "--data-dir", str(matcher.data_dir), "--out", str(backup)]) == 0
    capsys.readouterr()
    new = tmp_path / "restored"
    argv = ["admin", "restore", "--backup", str(backup), "--data-dir", str(new), "--no-previous"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"`cp -a {backup} {new}`, its audit key copied to {new / 'audit.key'}" in err
    assert f"`blindmatch admin check --data-dir {new}`" in err
    assert "nothing was written" in err
    assert not new.exists()


# -- admin check: a project past its expiry --------------------------------------------------


@pytest.mark.server
def test_admin_check_says_a_project_past_its_expiry_still_holds_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A matcher down when a project expired keeps its uploads until its next start; `admin
    check` said `OK: no problems found` and counted them as stored uploads, nothing more."""
    day = 86400.0
    server = create_server(  # its clock two days back: the project expires a day ago, for real
        "127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, clock=lambda: time.time() - 2 * day
    )
    try:
        matcher = Matcher(server, tmp_path / "data", ADMIN_TOKEN)
        with matcher.operator() as op:
            tokens = op.create_project(
                "trial", ["north", "south"], expires_unix=int(time.time() - day)
            ).tokens
        with matcher.member(tokens["north"]) as north:
            north.upload("trial", write(population(2, 50, 0.3, seed=4)[0], tmp_path / "n"))
    finally:
        server.stop(grace=None)
    assert main(["admin", "check", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "will be repaired by the matcher" in out
    assert "project trial expired at " in out
    assert (
        "but its data (1 upload, its runs and results) is still in the data dir: the matcher "
        "deletes it at its next start"
    ) in out
