"""Helpers shared by the trust tests: encoded member data, raw uploads, and a snapshot of
everything the matcher keeps (to prove a refused request changed nothing)."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
from pathlib import Path

import grpc

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.conftest import Matcher, Org
from tests.test_flow import encode


def encode_all(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def db_rows(data_dir: Path, table: str) -> list[tuple]:
    """Rows of one table, read through a separate connection (as an outsider would)."""
    with sqlite3.connect(data_dir / "blindmatch.sqlite") as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


TABLES = ("projects", "members", "uploads", "runs", "run_inputs", "links", "audit")


def snapshot(matcher: Matcher) -> dict[str, object]:
    """Every row and every file the matcher keeps."""
    state: dict[str, object] = {t: db_rows(matcher.data_dir, t) for t in TABLES}
    state["files"] = sorted(
        str(p.relative_to(matcher.data_dir))
        for sub in ("clks", "tmp")
        for p in (matcher.data_dir / sub).iterdir()
    )
    return state
