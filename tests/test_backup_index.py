"""`admin backup` beside a member changing its standing index (docs/operations.md "Beside
members changing their standing indexes"). The database (the audit log) and `index.sqlite`
(the indexes) are two SQLite files, snapshotted one after the other; an index change is
announced in the log, then stored in the index. A backup whose index snapshot held a change
its log snapshot lacked would restore to an index with records no audit entry accounts for
(and a log whose next entry reuses the seq that change was stored with); one whose log held
a settled change its index lacked would restore to a log claiming records that are not there.
Each backup here is restored and served: the index the member lists must be the one its last
audited change says, and every change stored beside it must be the audited one."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from blindmatch.cli.app import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage import backup
from blindmatch.matcher.storage.backup import backup_data_dir
from tests.support import ADMIN_TOKEN, Matcher

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)

BACKUPS = 12


@pytest.fixture
def project(matcher: Matcher) -> ProjectTokens:
    with matcher.operator() as op:
        return op.create_project("region", ["north", "south"])


def audited_size(entries: list[dict]) -> int:
    """The record count of north's last index change that the log says happened."""
    voided = {e["detail"]["announced"] for e in entries if e["action"] == "index.change.void"}
    changes = [
        e for e in entries
        if e["action"] == "index.change" and e["member"] == "north" and e["seq"] not in voided
    ]  # fmt: skip
    return int(changes[-1]["detail"]["record_count"]) if changes else 0


def stored_changes(data_dir: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT audit_seq, change_id FROM index_changes").fetchall()


def served_as_restored(backup: Path, key: Path, tmp_path: Path, token: str) -> tuple[int, int]:
    """Restore `backup` (a copy and its key), serve it: north's listed index size and the
    size its audit log says, and every stored change checked against its announcement."""
    restored = tmp_path / f"restored-{backup.name}"
    shutil.copytree(backup, restored)
    shutil.copy(key, restored / "audit.key")
    server = create_server("127.0.0.1:0", restored, ADMIN_TOKEN)
    try:
        target = f"127.0.0.1:{server.port}"
        with MatcherClient(target, ADMIN_TOKEN) as op:
            entries = list(op.audit("region"))
        by_seq = {e["seq"]: e for e in entries}
        for seq, change_id in stored_changes(restored):
            announced = by_seq.get(seq)
            assert announced is not None, f"change {change_id} stored under seq {seq}: no entry"
            assert announced["action"] == "index.change"
            assert announced["detail"]["change_id"] == change_id  # type: ignore[index]
        with MatcherClient(target, token) as north:
            return len(north.list_index("region")), audited_size(entries)
    finally:
        server.stop(grace=None)
        shutil.rmtree(restored)


def test_backups_beside_a_member_changing_its_index_restore_to_the_audited_index(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path
) -> None:
    clks = population(1, 4000, 0.0, seed=5)[0].clks
    stop, changes = threading.Event(), [0]

    def churn() -> None:  # each change adds 3 records and removes 1: the size always grows
        with matcher.member(project.tokens["north"]) as north:
            while not stop.is_set():
                k = changes[0]
                puts = [
                    (f"r{3 * k + i}", clks[(3 * k + i) % len(clks)].tobytes()) for i in range(3)
                ]
                removes = [f"r{3 * (k - 1)}"] if k else []
                north.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   puts=puts, removes=removes)  # fmt: skip
                changes[0] += 1

    (tmp_path / "keys").mkdir()
    churner = threading.Thread(target=churn)
    churner.start()
    backups = []
    try:
        while changes[0] < 1:  # (a change through, so that each backup overlaps the next)
            stop.wait(0.01)
        for i in range(BACKUPS):
            dest = tmp_path / "backups" / f"b{i}"
            backup_data_dir(matcher.data_dir, dest, key_out=tmp_path / "keys" / f"b{i}.key")
            backups.append(dest)
    finally:
        stop.set()
        churner.join(timeout=60)
    assert changes[0] > BACKUPS  # the index changed during the backups
    sizes = [
        served_as_restored(b, tmp_path / "keys" / f"{b.name}.key", tmp_path,
                           project.tokens["north"])
        for b in backups
    ]  # fmt: skip
    assert [listed for listed, _ in sizes] == [audited for _, audited in sizes]
    assert all(listed > 0 for listed, _ in sizes)


def test_a_backup_waits_out_an_index_change_holding_the_lock_however_long_saying_so(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One huge index change holds index.sqlite's write lock while it is stored, for longer
    than any fixed wait (the backup used to give up after 30 s: "database is locked").
    Here the lock is held, as a change holds it, until the backup has said twice that it is
    waiting: each wait is cut short (`LOCK_WAIT_S`) so that it says so quickly."""
    clks = population(1, 50, 0.0, seed=6)[0].clks
    with matcher.member(project.tokens["north"]) as north:
        puts = [(f"r{i}", clk.tobytes()) for i, clk in enumerate(clks)]
        north.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    monkeypatch.setattr(backup, "LOCK_WAIT_S", 0.05)
    told: list[float] = []
    waited_twice = threading.Event()

    def waiting(seconds: float) -> None:
        told.append(seconds)
        if len(told) >= 2:
            waited_twice.set()

    dest, key = tmp_path / "backups" / "b", tmp_path / "b.key"
    failed: list[BaseException] = []

    def back_up() -> None:
        try:
            backup.backup_data_dir(matcher.data_dir, dest, key_out=key, waiting=waiting)
        except BaseException as exc:  # (reported below, in the test's thread)
            failed.append(exc)

    writer = sqlite3.connect(matcher.data_dir / "index.sqlite", isolation_level=None)
    taker = threading.Thread(target=back_up)
    try:
        writer.execute("BEGIN IMMEDIATE")  # what a change being stored holds
        taker.start()
        assert waited_twice.wait(timeout=120), failed
        assert not dest.exists() and not failed  # still waiting, not failed
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        taker.join(timeout=120)
    assert failed == []
    assert told == sorted(told)  # the time waited so far, each time
    assert served_as_restored(dest, key, tmp_path, project.tokens["north"]) == (50, 50)


def test_admin_backup_says_on_stderr_that_it_waits_for_an_index_change(
    matcher: Matcher, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(backup, "LOCK_WAIT_S", 0.05)
    dest = tmp_path / "b"
    rc: list[int] = []
    writer = sqlite3.connect(matcher.data_dir / "index.sqlite", isolation_level=None)
    command = threading.Thread(
        target=lambda: rc.append(
            main(["admin", "backup", "--data-dir", str(matcher.data_dir), "--out", str(dest)])
        )
    )
    said = ""
    try:
        writer.execute("BEGIN IMMEDIATE")  # what a change being stored holds
        command.start()
        while said.count("waiting for the standing indexes' write lock") < 2:
            assert command.is_alive(), said
            said += capsys.readouterr().err
            time.sleep(0.01)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        command.join(timeout=120)
    assert rc == [0] and (dest / "index.sqlite").is_file()
    assert "an index change is being stored" in said
    assert "Backed up" in capsys.readouterr().out
