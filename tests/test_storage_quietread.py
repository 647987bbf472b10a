"""Reading a data dir writes nothing beside its databases (matcher/storage/quietread.py),
whether a process has them open or a killed one left a -wal to them; and what a killed
matcher's -wal holds is read, and said, not passed over."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from benchmarks.faults import Server
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from blindmatch.cli import main
from blindmatch.client import MatcherClient
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.storage import quietread
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.quietread import left_as_found, read_as_immutable, wal_left
from blindmatch.matcher.storage.sqlite import layout_of, newer_layout
from tests.support import files_of

pytestmark = pytest.mark.on_disk  # kills: tmp_path on the disk (tests/conftest.py)

# A process that keeps a WAL database open and runs each line it reads as a statement.
WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
print("open", flush=True)
for line in sys.stdin:
    conn.execute(line)
    print("done", flush=True)
"""


@pytest.fixture
def killed(tmp_path: Path) -> Path:
    """A matcher's data dir (`blindmatch serve`, a process of its own) SIGKILLed with
    changes in its -wal files: a project, north's standing index, a second project."""
    server = Server(tmp_path / "data", 0, "bm_admin_" + secrets.token_hex(8))
    server.start()
    try:
        with MatcherClient(server.target, server.admin_token) as op:
            tokens = op.create_project("p", ["north", "west"]).tokens
        with MatcherClient(server.target, tokens["north"]) as north:
            clks = population(1, 50, 0.0, seed=5)[0].clks
            puts = [(f"r{i}", clk.tobytes()) for i, clk in enumerate(clks)]
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
        with MatcherClient(server.target, server.admin_token) as op:
            op.create_project("later", ["a", "b"])
    finally:
        server.kill()
        server.stop()
    return server.data_dir


def _changes_left(data: Path) -> list[str]:
    return [p.name for p in data.glob("*-wal") if p.stat().st_size > 0]


def test_a_killed_matchers_data_dir_is_checked_and_backed_up_without_a_write_beside_it(
    killed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `admin check` rewrote the -shm files a killed matcher left (SQLite rebuilds its
    shared-memory index, a reader's mark set), made them where they were gone (a copy of the
    data dir without them), and said nothing of the -wal's changes; `admin backup` rewrote
    them too (and took the index's write lock, through a writable connection, against a
    writer that was not there). Now both read a private copy of a database whose -wal holds
    changes, and the check says so, as what the next start repairs by itself."""
    assert "blindmatch.sqlite-wal" in _changes_left(killed)
    before = files_of(killed)
    assert main(["admin", "check", "--data-dir", str(killed)]) == 0
    said = capsys.readouterr().out
    assert "2 projects" in said and "50 indexed records" in said  # (what the -wal holds)
    assert f"{killed / 'blindmatch.sqlite'}-wal: left by a process that did not close" in said
    assert files_of(killed) == before
    backup = tmp_path / "backup"
    assert main(["admin", "backup", "--data-dir", str(killed), "--out", str(backup)]) == 0
    capsys.readouterr()
    assert files_of(killed) == before
    copied = check_data_dir(backup, require_key=False)
    assert copied.ok and copied.projects == 2 and copied.index_records == 50, copied.render()
    for shm in killed.glob("*-shm"):  # a copy of the data dir without them
        shm.unlink()
    before = files_of(killed)
    assert main(["admin", "check", "--data-dir", str(killed)]) == 0
    assert "2 projects" in capsys.readouterr().out
    assert files_of(killed) == before


def _killed_with_layout(db: Path, layout: int) -> None:
    """`db` in WAL mode, its layout `layout` in its -wal only, its writer killed."""
    code = (
        f"import os, sqlite3\nconn = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "conn.execute('PRAGMA journal_mode=WAL')\nconn.execute('CREATE TABLE t (x)')\n"
        "conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
        f"conn.execute('PRAGMA user_version = {layout}')\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_layout_a_killed_process_left_in_its_wal_is_read_and_nothing_written(
    tmp_path: Path,
) -> None:
    """Was: the layout read through the -wal rewrote the -shm beside it (made it, where it
    was gone): the read of a store's layout by `lookup-server`, `admin check`, `backup` and
    `restore` wrote into the data dir."""
    db = tmp_path / "store.sqlite"
    _killed_with_layout(db, 7)
    assert Path(f"{db}-wal").stat().st_size > 0 and Path(f"{db}-shm").exists()
    before = files_of(tmp_path)
    assert layout_of(db) == 7
    assert files_of(tmp_path) == before
    Path(f"{db}-shm").unlink()
    before = files_of(tmp_path)
    assert layout_of(db) == 7
    assert files_of(tmp_path) == before


# A matcher started on a database and stopped again: its layout set, its close folding the
# -wal into the database and deleting the -wal and -shm.
STARTED_AND_STOPPED = (
    "import sqlite3, sys\nconn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('PRAGMA journal_mode=WAL')\nconn.execute('PRAGMA user_version = 8')\n"
    "conn.close()\n"
)


@pytest.mark.parametrize("before", ["the database", "its -wal"])
def test_a_layout_read_from_a_copy_whose_wal_a_start_folds_meanwhile_is_read_again(
    before: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store a killed matcher left with changes in its -wal is read from a copy; a matcher
    started and stopped (its layout recorded, the -wal folded in and deleted as it closed)
    before the database, or its -wal, is copied: the layout read is read again as then
    found, the new one, nothing written beside it (before: the copy of the -wal it no
    longer found raised FileNotFoundError out of `layout_of` and `newer_layout`, as out of
    any read `left_as_found` makes: `admin check`, `admin backup`, a look-up server's
    Reload)."""
    db = tmp_path / "store.sqlite"
    _killed_with_layout(db, 7)
    copyfile, ran = quietread.shutil.copyfile, []
    first = db if before == "the database" else Path(f"{db}-wal")

    def started_meanwhile(src: Any, dst: Any, **kw: Any) -> Any:
        if Path(src) == first and not ran:  # (the forced order: the start, then the copy)
            ran.append(subprocess.run([sys.executable, "-c", STARTED_AND_STOPPED, str(db)],
                                      check=True, timeout=60))  # fmt: skip
        return copyfile(src, dst, **kw)

    monkeypatch.setattr(quietread.shutil, "copyfile", started_meanwhile)
    assert layout_of(db) == 8 and len(ran) == 1
    assert newer_layout(db, 7) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]


def test_a_database_a_process_has_open_is_read_through_its_wal_even_with_its_wal_empty(
    tmp_path: Path,
) -> None:
    """A store a running process holds, its -wal empty (a checkpoint truncated it, as the
    matcher's after an erasure): read through its WAL, as any reader reads a live database
    (before, a layout read took an empty -wal for a store at rest and read it as immutable,
    which SQLite promises nothing for while another process writes the file); nothing is
    copied or made. Its changes after are seen; once it closes, it is read at rest."""
    db = tmp_path / "store.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None

    def run(statement: str) -> None:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(statement + "\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "done\n"

    try:
        assert writer.stdout.readline() == "open\n"
        for statement in ("CREATE TABLE t (x)", "PRAGMA user_version = 3",
                          "PRAGMA wal_checkpoint(TRUNCATE)"):  # fmt: skip
            run(statement)
        assert Path(f"{db}-wal").stat().st_size == 0
        files = sorted(p.name for p in tmp_path.iterdir())
        assert left_as_found([db], lambda: (read_as_immutable(db), wal_left(db))) == (
            False,
            False,
        )
        assert layout_of(db) == 3
        run("PRAGMA user_version = 8")
        assert layout_of(db) == 8
        assert sorted(p.name for p in tmp_path.iterdir()) == files
    finally:
        writer.stdin.close()
        assert writer.wait(60) == 0
        writer.stdout.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]  # (closed)
    assert left_as_found([db], lambda: read_as_immutable(db)) is True
    assert layout_of(db) == 8
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 8


def test_verify_audit_of_a_stopped_roles_log_leaves_its_data_dir_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `two-server verify-audit` (and S1's capped answers after it) read the log through
    a plain read-only reader, which made a -wal and a -shm beside a stopped role's log."""
    data = tmp_path / "s1"
    create_role("s1", "127.0.0.1:0", "k" * 43, "m" * 43, s2="127.0.0.1:1",
                data_dir=data).stop(grace=None)  # fmt: skip
    before = files_of(data)
    assert not [name for name in before if name.endswith(("-wal", "-shm"))]
    assert main(["two-server", "verify-audit", "--data-dir", str(data), "--role", "s1"]) == 0
    assert "twoserver-s1.sqlite: intact" in capsys.readouterr().out
    assert files_of(data) == before
