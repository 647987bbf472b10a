"""`blindmatch admin check` and `admin backup`: the operator's view of a data dir."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from benchmarks.knownclks import Dataset, expected_hits, hits_of, population, write
from blindmatch.cli import main
from blindmatch.client import MatcherClient
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.backup import copy_kept, pinned
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import ADMIN_TOKEN, Matcher

MEMBERS = ["north", "south", "east"]


@pytest.fixture
def datasets() -> dict[str, Dataset]:
    return dict(zip(MEMBERS, population(3, 500, 0.4, seed=11), strict=True))


@pytest.fixture
def linked(matcher: Matcher, datasets: dict[str, Dataset], tmp_path: Path) -> dict[str, str]:
    """A project whose three members uploaded and ran; returns their tokens."""
    with matcher.operator() as op:
        tokens = op.create_project("region", MEMBERS).tokens
    for name, ds in datasets.items():
        with matcher.member(tokens[name]) as member:
            member.upload("region", write(ds, tmp_path / f"{name}.encoded"))
    with matcher.member(tokens["north"]) as member:
        run = member.start_run("region")
        assert list(member.watch_run("region", run.run_id))[-1].state == "done"
    return tokens


def admin(*args: str) -> int:
    return main(["admin", *args])


def only_clk_file(data_dir: Path) -> Path:
    return sorted((data_dir / "clks").iterdir())[0]


# -- check ---------------------------------------------------------------------------------


def test_check_passes_on_a_live_data_dir(
    matcher: Matcher, linked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("check", "--data-dir", str(matcher.data_dir)) == 0
    out = capsys.readouterr().out
    assert "3 stored uploads verified" in out
    assert "OK: no problems found" in out


def test_check_passes_on_a_stopped_data_dir_and_changes_nothing(
    matcher: Matcher, linked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    matcher.server.stop(grace=None)

    def contents() -> dict[Path, bytes]:  # SQLite's own -wal/-shm scratch files aside
        return {
            p: p.read_bytes()
            for p in matcher.data_dir.rglob("*")
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))
        }

    before = contents()
    assert admin("check", "--data-dir", str(matcher.data_dir), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["uploads_checked"] == 3 and report["runs"] == 1
    assert contents() == before


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: only_clk_file(d).unlink(), "is missing"),
        (lambda d: only_clk_file(d).write_bytes(b"\0" * 128), "holds 128 bytes, not the"),
        (
            lambda d: only_clk_file(d).write_bytes(
                bytes([only_clk_file(d).read_bytes()[0] ^ 1]) + only_clk_file(d).read_bytes()[1:]
            ),
            "no longer match the SHA-256",
        ),
        (lambda d: (d / "clks" / "notes.txt").write_bytes(b"x"), "not an upload file"),
        (
            lambda d: sqlite3.connect(d / "blindmatch.sqlite").executescript(
                "UPDATE runs SET state='running'; "
                "INSERT INTO runs (id, project, seq, state, threshold, created) "
                "VALUES ('region-run-9', 'region', 9, 'queued', 0.8, 0);"
            ),
            "2 active runs",
        ),
        (
            lambda d: sqlite3.connect(d / "blindmatch.sqlite").executescript(
                "UPDATE uploads SET current=1"
                " WHERE rowid=(SELECT MIN(rowid) FROM uploads);"
                "INSERT INTO uploads SELECT 'dup', project, member, record_count, clk_bits,"
                " fingerprint, sha256, created, 1 FROM uploads LIMIT 1;"
            ),
            "2 current uploads",
        ),
    ],
    ids=["missing-file", "truncated-file", "flipped-bit", "foreign", "two-active-runs", "dup"],
)
def test_check_reports_damage_clearly_and_exits_1(
    matcher: Matcher,
    linked: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    damage: object,
    problem: str,
) -> None:
    matcher.server.stop(grace=None)
    damage(matcher.data_dir)  # type: ignore[operator]
    assert admin("check", "--data-dir", str(matcher.data_dir)) == 1
    err = capsys.readouterr().err
    assert "FAILED:" in err
    assert problem in err


def test_check_of_a_folder_that_is_not_a_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("check", "--data-dir", str(tmp_path)) == 1
    assert "is it a blindmatch data dir?" in capsys.readouterr().err
    assert not check_data_dir(tmp_path).ok


# -- backup and restore -------------------------------------------------------------------------


def test_a_backup_of_a_live_data_dir_restores_to_the_same_results(
    matcher: Matcher,
    linked: dict[str, str],
    datasets: dict[str, Dataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backup = tmp_path / "backups" / "region-1"
    key_out = tmp_path / "keys" / "audit-region-1.key"
    key_out.parent.mkdir()
    # The matcher keeps serving while the backup is taken.
    assert admin("backup", "--data-dir", str(matcher.data_dir), "--out", str(backup),
                 "--key-out", str(key_out)) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "verified" in said
    anchor = re.search(r"Audit anchor (\d+:[0-9a-f]{64})", said)
    assert anchor, said
    assert said.rstrip().endswith("check a restored log with `blindmatch audit verify --anchor`.")
    # Issue 16: the key stays apart, so whoever holds the backup cannot re-seal an edited log.
    key = (matcher.data_dir / "audit.key").read_bytes()
    assert key_out.read_bytes() == key and stat.S_IMODE(key_out.stat().st_mode) == 0o600
    assert [p for p in backup.rglob("*") if p.is_file() and key in p.read_bytes()] == []
    with matcher.member(linked["south"]) as member:
        south_before = hits_of(member.results("region").hits)

    # Disaster: the original is gone. Restore = copy the backup into place and serve it.
    matcher.server.stop(grace=None)
    shutil.rmtree(matcher.data_dir)
    restored = tmp_path / "restored-data"
    shutil.copytree(backup, restored)
    with pytest.raises(StartupRefused, match="audit"):  # not without its key
        create_server("127.0.0.1:0", restored, ADMIN_TOKEN)
    shutil.copy(key_out, restored / "audit.key")  # the key, from where it was kept
    assert admin("check", "--data-dir", str(restored)) == 0
    server = create_server("127.0.0.1:0", restored, ADMIN_TOKEN)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as operator:
            seq, head = anchor.group(1).split(":")
            assert operator.verify_audit((int(seq), head)).ok
        truth = expected_hits(datasets)
        for name in MEMBERS:
            with MatcherClient(f"127.0.0.1:{server.port}", linked[name]) as member:
                results = member.results("region")
                assert hits_of(results.hits) == truth[name]
                assert results.upload_sha256 == datasets[name].sha256
        with MatcherClient(f"127.0.0.1:{server.port}", linked["south"]) as member:
            assert hits_of(member.results("region").hits) == south_before
        # ... and it keeps working: a new run over the restored uploads gives the same answer.
        with MatcherClient(f"127.0.0.1:{server.port}", linked["east"]) as member:
            run = member.start_run("region")
            assert list(member.watch_run("region", run.run_id))[-1].state == "done"
            assert hits_of(member.results("region").hits) == truth["east"]
    finally:
        server.stop(grace=None)


def test_backup_refuses_to_overwrite(
    matcher: Matcher, linked: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    code = admin("backup", "--data-dir", str(matcher.data_dir), "--out", str(tmp_path / "taken"))
    assert code == 2  # bad input: the path given
    assert "already exists; back up to a new folder" in capsys.readouterr().err


def test_backup_refuses_to_put_the_audit_key_inside_the_backup(
    matcher: Matcher, linked: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "b"
    code = admin("backup", "--data-dir", str(matcher.data_dir), "--out", str(dest),
                 "--key-out", str(dest / "audit.key"))  # fmt: skip
    assert code == 2
    assert "inside the backup; the key must be kept apart" in capsys.readouterr().err
    assert not dest.exists() and list(tmp_path.glob(".b*")) == []


@pytest.mark.on_disk  # a race: tmp_path on the disk (tests/conftest.py)
def test_a_backup_beside_a_member_uploading_again_and_again_restores_to_a_working_matcher(
    matcher: Matcher,
    linked: dict[str, str],
    datasets: dict[str, Dataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Each upload of east's deletes the file of the one before: a snapshot may name a file
    # gone by the time it is copied, and the backup takes another, keeping what it copied.
    east = write(datasets["east"], tmp_path / "east-again.encoded")
    stop, sent = threading.Event(), [0]

    def churn() -> None:
        with matcher.member(linked["east"]) as member:
            while not stop.is_set():
                member.upload("region", east)
                sent[0] += 1

    churner = threading.Thread(target=churn)
    churner.start()
    backup, key_out = tmp_path / "backup", tmp_path / "keys" / "audit.key"
    key_out.parent.mkdir()
    try:
        while sent[0] < 1:  # (an upload through, so that the backup overlaps the next)
            stop.wait(0.01)
        assert admin("backup", "--data-dir", str(matcher.data_dir), "--out", str(backup),
                     "--key-out", str(key_out)) == 0  # fmt: skip
    finally:
        stop.set()
        churner.join()
    said = capsys.readouterr().out
    assert re.search(r"database snapshot and 3 upload files \(\d+ bytes\), verified", said)
    # One snapshot's uploads, each member's current one, and no file of an earlier one.
    assert len(list((backup / "clks").iterdir())) == 3
    assert admin("check", "--data-dir", str(backup), "--audit-key", str(key_out)) == 0
    assert "3 stored uploads verified" in capsys.readouterr().out

    matcher.server.stop(grace=None)
    restored = tmp_path / "restored-data"
    shutil.copytree(backup, restored)
    shutil.copy(key_out, restored / "audit.key")
    server = create_server("127.0.0.1:0", restored, ADMIN_TOKEN)
    try:
        truth = expected_hits(datasets)
        with MatcherClient(f"127.0.0.1:{server.port}", linked["north"]) as member:
            run = member.start_run("region")
            assert list(member.watch_run("region", run.run_id))[-1].state == "done"
        for name in MEMBERS:
            with MatcherClient(f"127.0.0.1:{server.port}", linked[name]) as member:
                results = member.results("region")
                assert hits_of(results.hits) == truth[name]
                assert results.upload_sha256 == datasets[name].sha256
    finally:
        server.stop(grace=None)


def test_a_file_deleted_after_the_snapshot_is_copied_and_a_retry_keeps_the_copies(
    tmp_path: Path,
) -> None:
    source, dest = tmp_path / "clks", tmp_path / "copy"
    source.mkdir()
    for name in "ab":
        (source / f"{name}.bin").write_bytes(name.encode() * 100)
    with pinned(source, dest) as pins:  # opened before the snapshot is taken
        (source / "a.bin").unlink()  # its member uploaded again after the snapshot
        assert copy_kept(["a.bin", "b.bin"], source, dest, pins) == (2, 200)
    assert (dest / "a.bin").read_bytes() == b"a" * 100
    b_copied = (dest / "b.bin").stat().st_ino
    # A file placed after the files were opened, and gone before it is copied: no copy
    # (the snapshot must be taken again), and what was copied stays.
    with pinned(source, dest) as pins:
        (source / "c.bin").write_bytes(b"c" * 10)
        (source / "c.bin").unlink()
        assert copy_kept(["b.bin", "c.bin"], source, dest, pins) is None
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin", "b.bin"]
    # The next snapshot's: only its new file copied, the one it no longer names deleted.
    (source / "d.bin").write_bytes(b"d" * 10)
    with pinned(source, dest) as pins:
        assert list(pins) == ["d.bin"]
        assert copy_kept(["b.bin", "d.bin"], source, dest, pins) == (2, 110)
    assert sorted(p.name for p in dest.iterdir()) == ["b.bin", "d.bin"]
    assert (dest / "b.bin").stat().st_ino == b_copied
