"""`blindmatch admin backup` and `admin check` on a two-server role's data dir
(docs/operations.md "Backing up S1 and S2"): real S1, S2 and combiner roles on loopback,
each with its `--data-dir`, the realistic fixture's uploads sent over gRPC. A backup taken
while the roles serve (and a member uploads again and again) is whole; restored, the roles
hold the same uploads, refuse the pairs of two restored uploads (their pairs evaluated after
the backup are not in it: restoring an older budget would reopen them), and a run over a
restored upload and a new one gives the in-process run's links. A copy damaged in each way
the role's start refuses is named by `admin check`, exit 1."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import audit, tickets
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.storage.role_check import check_role_dir
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import auth, cli_server
from tests.test_twoserver_restart import MEMBER_KEY, NAMES, Roles, in_process
from tests.test_twoserver_restart import uploads as uploads  # the fixture

pytestmark = [pytest.mark.server, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)
BACKED_UP = ("s1", "s2", "combiner")


def admin(*args: str) -> int:
    return main(["admin", *args])


@dataclass
class Backup:
    """The roles' data dirs under `live`, and each one's backup and audit key apart."""

    live: Path
    backups: Path
    keys: Path
    printed: str  # what `admin backup` said

    def of(self, role: str) -> Path:
        return self.backups / role

    def key(self, role: str) -> Path:
        return self.keys / f"{role}.key"


def _back_up_while_serving(roles: Roles, up: client.SharedUpload, backups: Path) -> None:
    """Each role's backup, taken while west uploads again and again to every role."""
    stop = threading.Event()
    sent = [0]

    def churn() -> None:
        while not stop.is_set():
            roles.send("west", up)
            sent[0] += 1

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        while sent[0] < 1:  # (an upload through, so that the backups overlap the next)
            stop.wait(0.01)
        for role in BACKED_UP:
            key = backups.parent / "keys" / f"{role}.key"
            assert admin("backup", "--data-dir", str(roles.root / role),
                         "--out", str(backups / role), "--key-out", str(key)) == 0  # fmt: skip
    finally:
        stop.set()
        churner.join()


@pytest.fixture
def backed_up(
    tmp_path: Path, uploads: list[client.SharedUpload], capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Roles, Backup]]:
    """Three members' uploads held, the backups taken while serving, then a run."""
    (tmp_path / "keys").mkdir(mode=0o700)
    roles = Roles(tmp_path / "live", "the parties' key of this test")
    try:
        for name, up in zip(NAMES, uploads, strict=True):
            roles.send(name, up)
        _back_up_while_serving(roles, uploads[2], tmp_path / "backups")
        printed = capsys.readouterr().out
        yield roles, Backup(tmp_path / "live", tmp_path / "backups", tmp_path / "keys", printed)
    finally:
        roles.stop()


def test_a_backup_taken_while_serving_restores_to_roles_that_refuse_its_spent_pairs(
    backed_up: tuple[Roles, Backup],
    uploads: list[client.SharedUpload],
    capsys: pytest.CaptureFixture[str],
) -> None:
    roles, backup = backed_up
    out = backup.printed
    assert "3 upload files" in out and "Its 3 uploads are sealed" in out
    assert "Audit anchor" in out
    # The backup holds no key, and checks OK with the one kept apart.
    for role in BACKED_UP:
        assert not list(backup.of(role).glob("*.key"))
        key = backup.key(role).read_bytes()
        assert all(key not in p.read_bytes() for p in backup.of(role).rglob("*") if p.is_file())
        assert admin("check", "--data-dir", str(backup.of(role)),
                     "--audit-key", str(backup.key(role))) == 0  # fmt: skip
    # After the backup: a run spends the pairs. Then S1's and S2's data dirs are lost.
    first = roles.run()
    roles.stop()
    for role in BACKED_UP:
        lost = backup.live / role
        lost.rename(backup.live / f"{role}.lost")
        shutil.copytree(backup.of(role), lost)
        shutil.copy2(backup.key(role), lost / f"twoserver-{role}.audit.key")
        assert admin("check", "--data-dir", str(lost)) == 0
    roles.start()
    for role in ("s1", "s2"):
        held = roles.running[role].service.held
        assert sorted(held) == sorted(NAMES)
        assert np.array_equal(held["north"].shares[0], getattr(uploads[0], role).shares[0])
        restored = roles.entries(role, "twoserver.restored")[-1]
        assert restored["sealed"] == 3 and 0 < restored["backup_taken"] <= time.time()
    # The restored budget is the backup's, which lacks the run's pairs: sealed, every pair of
    # two restored uploads is refused, as the pairs that run evaluated are.
    refused = roles.refused()
    assert "more than once since 'north' and 'south' uploaded (both uploads were restored " \
        "from a backup" in refused  # fmt: skip
    # A restored upload serves a run with a member's new upload: the in-process run's links.
    roles.send("north", uploads[0])
    got = roles.run(("north", "south"))
    want = in_process(uploads[:2]).links
    assert len(want) > 100
    for name in ("row", "partner_row", "score"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert len(first.row) > len(got.row)  # (the three members' run had more)


def _damaged(backup: Backup, tmp: Path, how: str) -> tuple[Path, str]:
    """S1's backup, restored to a new dir (its key beside it) and damaged `how`: the dir and
    what `admin check` must name."""
    data_dir = tmp / f"s1-{how}"
    shutil.copytree(backup.of("s1"), data_dir)
    shutil.copy2(backup.key("s1"), data_dir / "twoserver-s1.audit.key")
    held_db, log = data_dir / "twoserver-s1-held.sqlite", data_dir / "twoserver-s1.sqlite"
    with sqlite3.connect(held_db) as db:
        name, file = db.execute("SELECT name, file FROM uploads ORDER BY id").fetchone()
    db.close()
    path = data_dir / "twoserver-s1-held" / f"{file}.bin"
    if how == "missing":
        path.unlink()
        return data_dir, f"upload {name!r}: its file {path} is missing"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
        return data_dir, f"upload {name!r}: {path.stat().st_size} bytes, its arrays are"
    if how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 4
        path.write_bytes(bytes(data))
        return data_dir, f"upload {name!r}: {path} does not hash to the SHA-256 stored"
    if how == "unreadable":
        held_db.write_bytes(b"no database here" * 512)
        return data_dir, f"{held_db}: unreadable, not a role's held store"
    if how == "cut":  # the log's end cut off, from west's first upload on: the chain holds
        with sqlite3.connect(log) as db:
            db.execute("DELETE FROM audit WHERE seq >= (SELECT MIN(seq) FROM audit WHERE "
                       "action = 'twoserver.upload' AND member = 'west')")  # fmt: skip
        db.close()
        return data_dir, f"audit log {log}: no `twoserver.upload` entry of upload 'west'"
    with sqlite3.connect(log) as db:  # "chain": an entry's content edited
        db.execute('UPDATE audit SET detail = \'{"role": "s1", "records": 1}\' WHERE seq = 2')
    db.close()
    return data_dir, f"audit log {log}: entry 2"


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped", "unreadable", "chain", "cut"])
def test_check_names_each_fault_of_a_damaged_role_dir_and_the_role_refuses_it_too(
    backed_up: tuple[Roles, Backup], tmp_path: Path, how: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, backup = backed_up
    data_dir, named = _damaged(backup, tmp_path, how)
    capsys.readouterr()
    assert admin("check", "--data-dir", str(data_dir)) == 1
    err = capsys.readouterr().err
    assert named in err, err
    assert admin("check", "--data-dir", str(data_dir), "--json", "--no-hash") == (
        0 if how == "flipped" else 1  # (sizes only: a flipped bit needs the hash)
    )
    if how not in ("chain", "cut"):  # the role's own start refuses the same dir
        with pytest.raises(StartupRefused):
            create_role("s1", "127.0.0.1:0", "k", MEMBER_KEY, s2="127.0.0.1:1",
                        data_dir=data_dir)  # fmt: skip


def test_check_passes_on_a_serving_role_and_reports_unfinished_files_as_repairs(
    backed_up: tuple[Roles, Backup],
) -> None:
    _, backup = backed_up
    for role in BACKED_UP:
        report = check_role_dir(backup.live / role, role)
        assert report.ok, report.render()
        assert report.uploads_checked == 3 and report.audit_entries >= 4
    unfinished = backup.live / "s2" / "twoserver-s2-held" / "0123.tmp"
    unfinished.write_bytes(b"half an upload")
    unfinished.chmod(0o600)
    report = check_role_dir(backup.live / "s2", "s2")
    assert report.ok and len(report.repairs) == 1 and "0123.tmp" in report.repairs[0]
    unfinished.chmod(0o644)
    assert f"{unfinished} (mode 0644)" in check_role_dir(backup.live / "s2", "s2").problems[0]


def test_restore_replays_the_forgets_and_new_uploads_the_replaced_dirs_log_has_since(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = Roles(tmp_path / "live", "the parties' key of this test")
    try:
        rng = np.random.default_rng(3)
        names = ["p/west/0000000a", "p/north/0000000b", "p/south/0000000c"]
        for name in names:
            up = client.shared_upload(rng.integers(0, 256, (6, 128), dtype=np.uint8), b"s",
                                      client.BandPlan(4, 4))  # fmt: skip
            roles.send(name, up, tickets.issue(MEMBER_KEY, name, int(time.time()) + 600))
        s1 = roles.root / "s1"
        assert admin("backup", "--data-dir", str(s1), "--out", str(tmp_path / "s1.backup"),
                     "--key-out", str(tmp_path / "s1.key")) == 0  # fmt: skip
        # After the backup: west erased (S1 forgets it), south uploads again.
        with grpc.insecure_channel(f"127.0.0.1:{roles.running['s1'].port}") as channel:
            reply = pb_grpc.TwoServerBlockingStub(channel).Forget(
                pb.ForgetRequest(project="p", member="west"), metadata=auth(roles.key)
            )
            assert reply.dropped == 1
        again = client.shared_upload(rng.integers(0, 256, (6, 128), dtype=np.uint8), b"s",
                                     client.BandPlan(4, 4))  # fmt: skip
        newer = "p/south/0000000d"  # (its new upload, under a new tag, replaces the one before)
        roles.send(newer, again, tickets.issue(MEMBER_KEY, newer, int(time.time()) + 600))
    finally:
        roles.stop()
    s1.rename(tmp_path / "s1.broken")
    restore = ["restore", "--backup", str(tmp_path / "s1.backup"), "--data-dir", str(s1),
               "--audit-key", str(tmp_path / "s1.key")]  # fmt: skip
    assert admin(*restore) == 2  # neither --previous nor --no-previous: refused
    # Another role's dir, or another S1's log (the same key, another chain): refused.
    assert admin(*restore, "--previous", str(tmp_path / "live" / "s2")) == 2
    assert "twoserver-s1.sqlite there, not role s1's data dir" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    shutil.copy2(tmp_path / "s1.key", other / "twoserver-s1.audit.key")
    log = RoleAudit(other, "s1")
    log.log.append(audit.Event("p/north/0000000b", "twoserver.upload", member="p/north/0000000b"))
    log.close()
    assert admin(*restore, "--previous", str(other)) == 2
    assert "does not continue the backup's" in capsys.readouterr().err and not s1.exists()
    assert admin(*restore, "--previous", str(tmp_path / "s1.broken")) == 0
    out = capsys.readouterr().out
    assert f"2 restored uploads dropped (forgotten or uploaded again since: {names[2]}, " \
        f"{names[0]})" in out  # fmt: skip
    report = check_role_dir(s1, "s1")
    assert report.ok and report.uploads_checked == 1 and report.sealed == 1
    roles.start()
    try:
        assert sorted(roles.running["s1"].service.held) == [names[1]]
        entries = roles.entries("s1", "twoserver.restore")
        assert entries[-1]["dropped"] == sorted([names[0], names[2]])
        assert roles.entries("s1", "twoserver.forget")  # the history before, adopted
    finally:
        roles.stop()
    # Without the replaced dir, nothing can be replayed: west is back, and it says so.
    shutil.rmtree(s1)
    assert admin("restore", "--backup", str(tmp_path / "s1.backup"), "--data-dir", str(s1),
                 "--audit-key", str(tmp_path / "s1.key"), "--no-previous") == 0  # fmt: skip
    assert "warning: nothing replayed (--no-previous)" in capsys.readouterr().err
    assert check_role_dir(s1, "s1").uploads_checked == 3
    # The erasure named from the matcher's audit log instead: dropped at the restore.
    shutil.rmtree(s1)
    assert admin("restore", "--backup", str(tmp_path / "s1.backup"), "--data-dir", str(s1),
                 "--audit-key", str(tmp_path / "s1.key"), "--no-previous",
                 "--forget", "p/west") == 0  # fmt: skip
    assert f"--forget p/west: dropped {names[0]}." in capsys.readouterr().out
    assert check_role_dir(s1, "s1").uploads_checked == 2
    assert admin("restore", "--backup", str(tmp_path / "s1.backup"), "--data-dir",
                 str(tmp_path / "s1.other"), "--audit-key", str(tmp_path / "s1.key"),
                 "--no-previous", "--forget", "p/west/x") == 2  # fmt: skip
    assert "--forget 'p/west/x': PROJECT or PROJECT/MEMBER" in capsys.readouterr().err


def test_a_sealed_budget_refuses_every_pair_of_two_restored_uploads_until_one_uploads_again(
) -> None:  # fmt: skip
    budget = PairBudget()
    for name in ("north", "south"):
        budget.seal(name)
    rows = np.arange(5, dtype=np.uint32)
    for reach in (False, True):  # at the run's cut-offs and at the reach alike
        assert budget.spend("north", "south", rows, rows, reach=reach) == 5
        assert budget.spend("south", "north", rows[:1], rows[:1], reach=reach) == 1
    assert budget.spend("north", "north", rows, rows) == 5  # (within one upload too)
    assert budget.spend("north", "east", rows, rows) == 0  # a new upload's pairs: fresh
    assert budget.pairs() == 5
    budget.forget("south")  # south uploads again: its pairs start afresh
    assert not budget.sealed("north", "south")
    assert budget.spend("north", "south", rows, rows) == 0
    assert budget.spend("north", "south", rows, rows) == 5  # (and are counted as ever)


def test_restoring_a_backup_of_no_uploads_says_no_moment_not_1970(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A role's backup records its moment with its sealed uploads; one of none has none, and
    `admin restore` printed `(taken 1970-01-01 00:00:00 UTC)` (newops, 2026-12-07)."""
    s2 = create_role("s2", "127.0.0.1:0", "the parties' key", MEMBER_KEY, data_dir=tmp_path / "s2")
    try:
        assert admin("backup", "--data-dir", str(tmp_path / "s2"), "--out",
                     str(tmp_path / "b"), "--key-out", str(tmp_path / "b.key")) == 0  # fmt: skip
    finally:
        s2.stop(grace=None)
    capsys.readouterr()
    assert admin("restore", "--backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "r"),
                 "--audit-key", str(tmp_path / "b.key"), "--no-previous") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1970" not in out
    assert "(a backup of no uploads: no moment recorded)" in out


@pytest.fixture
def s2_process(tmp_path: Path) -> Iterator[Path]:
    """`blindmatch two-server role --role s2 --data-dir DIR` serving, as its own process: DIR."""
    keys = []
    for name, key in (("parties.key", "the parties' key"), ("members.key", MEMBER_KEY)):
        keys.append(tmp_path / name)
        keys[-1].write_text(key + "\n")
        keys[-1].chmod(0o600)
    data = tmp_path / "s2"
    with cli_server(["two-server", "role", "--role", "s2", "--listen", "127.0.0.1:0",
                     "--key-file", str(keys[0]), "--member-key-file", str(keys[1]),
                     "--data-dir", str(data)]):  # fmt: skip
        yield data


def test_a_second_role_on_a_data_dir_being_served_is_refused(
    s2_process: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, it started too, beside the first, on the same held store and audit log
    (newops, 2026-12-07)."""
    keys = s2_process.parent
    assert main(["two-server", "role", "--role", "s2", "--listen", "127.0.0.1:0", "--key-file",
                 str(keys / "parties.key"), "--member-key-file", str(keys / "members.key"),
                 "--data-dir", str(s2_process)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"--data-dir {s2_process}: another process is serving it" in err
    assert "two-server role --role s2 will not start on it" in err


def test_restore_refuses_a_previous_dir_a_role_still_serves(
    s2_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--previous` is the dir being replaced: a role still serving it goes on writing the
    audit log the restore replays; it was read as it stood (newops, 2026-12-07)."""
    assert admin("backup", "--data-dir", str(s2_process), "--out", str(tmp_path / "b"),
                 "--key-out", str(tmp_path / "b.key")) == 0  # fmt: skip
    capsys.readouterr()
    restore = ["restore", "--backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "r"),
               "--audit-key", str(tmp_path / "b.key"), "--previous", str(s2_process)]  # fmt: skip
    assert admin(*restore) == 2
    assert f"--previous {s2_process}: a server still serves it" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_restore_refuses_a_data_dir_or_backup_a_server_still_serves(
    s2_process: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Into or over a data dir a running `serve` (or role) holds, or from one given as the
    backup: exit 2, naming it, stop the server first, nothing written. Before, a served
    `--data-dir` was refused as `already exists ... move it aside` (moving a folder its server
    goes on writing) and a served `--backup` was read while it changed (opsleft, 2026-12-07)."""
    assert admin("backup", "--data-dir", str(s2_process), "--out", str(tmp_path / "b"),
                 "--key-out", str(tmp_path / "b.key")) == 0  # fmt: skip
    data = tmp_path / "matcher"
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", "")
    with cli_server(["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]):
        before = sorted(p.name for p in data.iterdir())
        for flag, backup, dest in (("--data-dir", tmp_path / "b", data),
                                   ("--data-dir", tmp_path / "b", s2_process),
                                   ("--backup", s2_process, tmp_path / "r")):  # fmt: skip
            capsys.readouterr()
            key = str(tmp_path / "b.key")
            restore = ["--backup", str(backup), "--data-dir", str(dest), "--audit-key", key]
            assert admin("restore", *restore, "--no-previous") == 2
            err = capsys.readouterr().err
            served = dest if flag == "--data-dir" else backup
            assert f"{flag} {served}: a server still serves it" in err
            assert "stop that server first (SIGTERM), then restore; nothing was written" in err
        assert sorted(p.name for p in data.iterdir()) == before
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.glob(".*.partial"))
