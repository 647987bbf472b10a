"""`blindmatch admin check` tells the truth: nothing false beside a busy matcher, nothing
false after a legitimate erase, what start-up repairs by itself reported as such, and
nothing left unchecked (both databases, every file, the audit key and chain)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, Dataset, population, write
from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found, read_as_immutable
from tests.support import ADMIN_TOKEN, Matcher, corrupt_table, files_of

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)

MEMBERS = ["north", "south", "east"]


@pytest.fixture
def linked(matcher: Matcher, tmp_path: Path) -> ProjectTokens:
    """Three members who uploaded and ran; north also keeps a standing index."""
    datasets = dict(zip(MEMBERS, population(3, 300, 0.4, seed=11), strict=True))
    with matcher.operator() as op:
        created = op.create_project("region", MEMBERS)
    for name, ds in datasets.items():
        with matcher.member(created.tokens[name]) as member:
            member.upload("region", write(ds, tmp_path / f"{name}.encoded"))
    with matcher.member(created.tokens["north"]) as member:
        run = member.start_run("region")
        assert list(member.watch_run("region", run.run_id))[-1].state == "done"
        puts = [(f"r{i}", datasets["north"].clks[i].tobytes()) for i in range(200)]
        member.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    return created


def test_check_beside_a_matcher_under_uploads_reports_nothing_false(
    matcher: Matcher, linked: ProjectTokens, tmp_path: Path
) -> None:
    base = population(3, 300, 0.4, seed=12)
    stop = threading.Event()
    uploads = {m: 0 for m in MEMBERS}

    def keep_uploading(member: str, ds: Dataset) -> None:
        rng = np.random.default_rng(len(member))
        with matcher.member(linked.tokens[member]) as client:
            while not stop.is_set():  # each upload replaces the last; its file is collected
                path = tmp_path / f"{member}-{uploads[member]}"
                client.upload("region", write(ds.variant(rng), path))
                uploads[member] += 1

    uploaders = [
        threading.Thread(target=keep_uploading, args=(m, ds))
        for m, ds in zip(MEMBERS, base, strict=True)
    ]
    for thread in uploaders:
        thread.start()
    reports = []
    try:
        while sum(uploads.values()) < 60 or len(reports) < 10:
            reports.append(check_data_dir(matcher.data_dir))
    finally:
        stop.set()
        for thread in uploaders:
            thread.join(timeout=60)
    assert [p for r in reports for p in r.problems] == []


def test_check_passes_after_a_member_erased_its_data(
    matcher: Matcher, linked: ProjectTokens
) -> None:
    with matcher.member(linked.tokens["east"]) as east:
        east.erase("region")
    with matcher.member(linked.tokens["south"]) as south:
        south.erase("region")  # the finished run now holds only north's input
    report = check_data_dir(matcher.data_dir)
    assert report.ok, report.render()


def test_check_reads_a_serving_matchers_wal_and_leaves_a_stopped_ones_dir_byte_for_byte(
    matcher: Matcher, linked: ProjectTokens, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only SQLite reader of a WAL-mode database makes a -wal and a -shm beside it
    (which it cannot remove at its close): a check of a stopped data dir made four files.
    It makes none now (the databases at rest are read as immutable), and a check of a
    serving matcher still reads what only the WAL holds (as immutable would not)."""
    data = matcher.data_dir
    with matcher.operator() as op:
        op.create_project("later", ["a", "b"])  # (in the WAL only: no checkpoint since)
    assert (data / "blindmatch.sqlite-wal").stat().st_size > 0
    assert main(["admin", "check", "--data-dir", str(data)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    serving = check_data_dir(data)
    assert serving.ok and serving.projects == 2, serving.render()
    assert serving.uploads_checked == 3 and serving.index_records == 200
    matcher.server.stop(grace=None)
    before = files_of(data)
    assert not [name for name in before if name.endswith(("-wal", "-shm"))]  # (a clean stop)
    assert main(["admin", "check", "--data-dir", str(data)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    assert files_of(data) == before
    stopped = check_data_dir(data)
    assert stopped.to_dict() == serving.to_dict()
    assert files_of(data) == before


def test_a_database_opened_during_a_read_at_rest_is_read_again_through_its_wal(
    tmp_path: Path,
) -> None:
    """A database at rest is read as immutable (no lock, the file as it is): one a process
    opens and writes during that read (a matcher started meanwhile) may have been read torn,
    so the read is done again, through its WAL, and sees the write."""
    db = tmp_path / "x.sqlite"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert not Path(f"{db}-wal").exists()  # (at rest)
    seen: list[tuple[bool, int]] = []
    writers: list[sqlite3.Connection] = []

    def read() -> int:
        reader = connect_read_only(db)
        try:
            seen.append(
                (read_as_immutable(db), reader.execute("SELECT COUNT(*) FROM t").fetchone()[0])
            )
        finally:
            reader.close()
        if not writers:  # a matcher starts: its connection open, a row written
            writers.append(sqlite3.connect(db, isolation_level=None))
            writers[0].execute("INSERT INTO t VALUES (2)")
        return seen[-1][1]

    try:
        assert left_as_found([db], read) == 2
    finally:
        writers[0].close()
    assert seen == [(True, 1), (False, 2)]


def test_a_backup_of_a_stopped_data_dir_leaves_it_byte_for_byte(
    matcher: Matcher, linked: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its snapshots were read-only SQLite readers, and it took the index's write lock: a
    backup of a stopped data dir left a -wal and a -shm beside both databases, and the
    backup a -wal and a -shm beside its copy of blindmatch.sqlite."""
    data = matcher.data_dir
    matcher.server.stop(grace=None)
    before = files_of(data)
    assert main(["admin", "backup", "--data-dir", str(data), "--out", str(tmp_path / "b")]) == 0
    assert "verified" in capsys.readouterr().out
    assert files_of(data) == before
    copied = files_of(tmp_path / "b")
    assert sorted(name for name in copied if "sqlite" in name) == [
        "blindmatch.sqlite",
        "index.sqlite",
    ]
    report = check_data_dir(tmp_path / "b", audit_key_file=data / "audit.key")
    assert report.ok and report.uploads_checked == 3, report.render()
    assert files_of(tmp_path / "b") == copied


def test_check_reports_what_start_up_repairs_as_such_and_start_up_repairs_it(
    matcher: Matcher, linked: ProjectTokens, capsys: pytest.CaptureFixture[str]
) -> None:
    matcher.server.stop(grace=None)
    data = matcher.data_dir
    # What a crash leaves: a cut-short upload, a file whose row never committed, a run
    # that was running, an index change announced in the audit log but never stored.
    for left in (data / "tmp" / "abc.part", data / "clks" / "0123abcd.bin"):
        left.write_bytes(b"\0" * 128)
        left.chmod(0o600)  # as the matcher makes every file
    with closing(sqlite3.connect(data / "blindmatch.sqlite")) as db, db:
        db.execute(
            "INSERT INTO runs (id, project, seq, state, stage, threshold, created) "
            "VALUES ('region-run-2', 'region', 2, 'running', 'compare', 0.8, 1e10)"
        )
        db.execute(
            "INSERT INTO run_inputs SELECT 'region-run-2', position, member, upload_id "
            "FROM run_inputs WHERE run_id='region-run-1'"
        )
        db.execute("INSERT INTO audit_intents VALUES (999999, 'region', 'north', 'cut-short')")
    assert main(["admin", "check", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "will be repaired by the matcher (4; not problems):" in out
    for repair in ("tmp: 1 file of uploads", "0123abcd.bin", "region-run-2: running", "cut-short"):
        assert repair in out
    assert "OK: no problems found" in out

    server = create_server("127.0.0.1:0", data, ADMIN_TOKEN, scrub_interval=0)
    try:
        server.runs.wait_for_change(5)
    finally:
        server.stop(grace=None)
    report = check_data_dir(data)
    assert report.ok and report.repairs == [], report.render()
    with closing(sqlite3.connect(data / "blindmatch.sqlite")) as db:
        (action,) = db.execute("SELECT action FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        (state,) = db.execute("SELECT state FROM runs WHERE id='region-run-2'").fetchone()
    assert state == "done"  # resumed from the start
    assert action in ("index.change.void", "run.done", "run.start")


@pytest.mark.parametrize(("database", "table"), [("index.sqlite", "index_records"),
                                                 ("blindmatch.sqlite", "links")])  # fmt: skip
def test_check_finds_a_corrupt_page_in_either_database(
    matcher: Matcher, linked: ProjectTokens, database: str, table: str
) -> None:
    matcher.server.stop(grace=None)
    corrupt_table(matcher.data_dir / database, table)
    report = check_data_dir(matcher.data_dir)
    assert not report.ok
    assert any(database in p and "restore" in p for p in report.problems), report.render()


def test_check_verifies_the_audit_chain_with_its_key(
    matcher: Matcher, linked: ProjectTokens, tmp_path: Path
) -> None:
    matcher.server.stop(grace=None)
    key = matcher.data_dir / "audit.key"
    kept = tmp_path / "elsewhere.key"
    shutil.move(key, kept)
    missing = check_data_dir(matcher.data_dir)
    assert any("audit key" in p and "missing" in p for p in missing.problems)
    assert check_data_dir(matcher.data_dir, audit_key_file=kept).ok  # serve --audit-key

    key.write_bytes(b"k" * 32)  # a key, but not the one the log was written with
    wrong = check_data_dir(matcher.data_dir)
    assert any("is not the key the log was written with" in p for p in wrong.problems)

    shutil.copy(kept, key)
    with closing(sqlite3.connect(matcher.data_dir / "blindmatch.sqlite")) as db, db:
        db.execute("UPDATE audit SET purpose='edited' WHERE seq=3")
    edited = check_data_dir(matcher.data_dir)
    assert edited.problems == ["audit log: entry 3: its hash does not match its content (edited)"]
