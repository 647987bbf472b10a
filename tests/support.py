"""Helpers shared by the trust tests: encoded member data, raw uploads, and a snapshot of
everything the matcher keeps (to prove a refused request changed nothing)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import grpc
import pytest

from blindmatch.client.encoded import Encoded
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.conftest import Matcher, Org
from tests.test_flow import encode


def encode_all(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def upload_messages(
    project: str, clks: bytes, *, clk_bits: int = 1024, fingerprint: bytes = bytes(32)
) -> list[pb.UploadRequest]:
    header = pb.UploadHeader(
        project=project,
        clk_bits=clk_bits,
        record_count=len(clks) // (clk_bits // 8),
        fingerprint=fingerprint,
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    return [pb.UploadRequest(header=header), pb.UploadRequest(clks=clks)]


def stub(channel: grpc.Channel) -> pb_grpc.MatcherStub:
    return pb_grpc.MatcherStub(channel)


def db_rows(data_dir: Path, table: str, db: str = "blindmatch.sqlite") -> list[tuple]:
    """Rows of one table, read through a separate connection (as an outsider would)."""
    with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


DATABASES = ("blindmatch.sqlite", "index.sqlite")
SQLITE_FILES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal")


def tables(data_dir: Path, db: str) -> list[str]:
    """Every table of a database, as the database itself lists them."""
    with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        return [name for (name,) in rows]


def snapshot(matcher: Matcher) -> dict[str, object]:
    """Every row of every table of both databases, and every file the matcher keeps: each
    file's name, and its content unless it is a database's (whose rows are above)."""
    data_dir = matcher.data_dir
    state: dict[str, object] = {}
    for db in DATABASES:
        with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
            for table in tables(data_dir, db):
                rows = conn.execute(f"SELECT * FROM {table}").fetchall()
                state[f"{db}:{table}"] = sorted(rows, key=repr)
    state["files"] = {
        str(p.relative_to(data_dir)): None
        if p.name.endswith(SQLITE_FILES)
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }
    return state


def corrupt_table(db_path: Path, table: str) -> None:
    """Scribble over the b-tree header of `table`'s root page, as a bad disk block would
    (the database must be closed: nothing of it left in a -wal file)."""
    with closing(sqlite3.connect(db_path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    assert root is not None, f"no table {table} in {db_path}"
    with open(db_path, "r+b") as fh:
        fh.seek((root[0] - 1) * page_size)
        fh.write(b"\x0d\xff\xff\xff\xff\xff\xff\xff" * 8)


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs, "3m") mounted at `where`, so writes end in a
    genuine ENOSPC; the test is skipped where mounting needs a root this run lacks."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(disk: Path) -> Path:
    """Take every free byte of `disk`, as another process on the host might; the filler."""
    filler = disk / "filler"
    fh = open(filler, "wb")  # noqa: SIM115 - closed below, where a full disk may refuse it
    with suppress(OSError):
        while True:
            fh.write(bytes(4096))
            fh.flush()
    with suppress(OSError):
        fh.close()
    return filler
