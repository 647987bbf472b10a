"""An upload of no records (a folder `encode --allow-empty` wrote) never replaces a member's
upload of some without a word: `upload` refuses it (exit 2, naming the folder and the records it
would replace, nothing sent), and so does the matcher, unless the upload says so
(`--allow-empty`, UploadHeader.allow_empty). A CLK project on a real matcher, and a two-server
project on S1, S2 and a real matcher that is their combiner, all on loopback."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT
from blindmatch.cli.app import main
from blindmatch.client.encoding.encoded import read_encoded, write_encoded
from blindmatch.client.errors import MatcherError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import ticket
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos.wire import REPLACES_RECORDS_METADATA
from tests import twoserver_world
from tests.support import Matcher, auth, stub
from tests.twoserver_world import SCHEMA, World, create

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def folder_of(path: Path, records: int) -> Path:
    write_encoded(path, clks=secrets.token_bytes(records * CLK_BITS // 8), clk_bits=CLK_BITS,
                  fingerprint=FINGERPRINT, ids=[str(i) for i in range(records)], report={},
                  rule=None)  # fmt: skip
    return path


def test_an_empty_folder_does_not_replace_a_clk_upload_unless_told(
    matcher: Matcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with matcher.operator() as op:
        tokens = op.create_project("p", ["a", "b"]).tokens
    server = ["--project", "p", "--server", matcher.target, "--token", tokens["a"]]
    full, empty = folder_of(tmp_path / "x1.enc", 3), folder_of(tmp_path / "x2.enc", 0)
    assert main(["upload", str(full), *server]) == 0
    capsys.readouterr()
    # Was: "Uploaded 0 encodings to p", exit 0, a's 3 records replaced by none.
    assert main(["upload", str(empty), *server]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        f"Error: {empty} holds no records: uploading it would replace your current upload to "
        "p (3 records) with none. Nothing was sent or replaced. Pass --allow-empty"
    ) in captured.err
    with matcher.member(tokens["a"]) as a:
        assert a.describe("p").members[0].record_count == 3
    assert main(["upload", str(empty), *server, "--allow-empty"]) == 0
    assert "Uploaded 0 encodings to p" in capsys.readouterr().out
    with matcher.member(tokens["a"]) as a:
        assert a.describe("p").members[0].record_count == 0
    # A first upload of no records replaces nothing: taken without the option.
    other = ["--project", "p", "--server", matcher.target, "--token", tokens["b"]]
    assert main(["upload", str(empty), *other]) == 0


def tags(world: World) -> dict[str, list[str]]:
    """Every upload S1 and S2 hold, by its project/member/tag."""
    return {role: sorted(r.service.held) for role, r in world.roles.items()}


def test_an_empty_two_server_upload_is_refused_at_its_ticket_before_a_share_is_sent(
    world: World, encoded: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = encoded["north"].parent  # (tests/twoserver_world.py encode_members' folder)
    export = tmp_path / "north-police.csv"
    with open(members / "north-police.csv", encoding="utf-8") as fh:
        export.write_text(fh.readline(), encoding="utf-8")  # the header alone
    empty = tmp_path / "x2.enc"
    # Was: a traceback (ValueError: sealed bands ... not empty) from `encode --two-server`.
    assert main(["encode", str(export), "--schema", str(SCHEMA), "--secret-file",
                 str(members / "linkage.secret"), "--mapping", str(members / "north-police.toml"),
                 "--out", str(empty), "--two-server", "--allow-empty", "--quiet"]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith(
        f"Error: {export}: no records, and a two-server upload holds at least one: nothing "
        "was written."
    )
    assert not empty.exists()
    # Another client's upload of no records: its ticket refused, S1 and S2 sent nothing.
    project = create(world, "shares", "two-server")
    token = project.tokens["north"]
    assert world.cli("upload", str(encoded["north"]), "--project", "shares", token=token) == 0
    n = read_encoded(encoded["north"], verify=False).record_count
    before = tags(world)
    with MatcherClient(world.target, token) as north:
        planned = north.describe("shares")  # (north's encoding: its fingerprint, its widths)
        header = pb.UploadHeader(
            record_count=0,
            fingerprint=read_encoded(encoded["north"], verify=False).fingerprint,
            two_server_bits=[1024, 1024],
        )
        with pytest.raises(MatcherError) as refused:
            ticket(north, "shares", header)
        assert refused.value.trailing[REPLACES_RECORDS_METADATA] == str(n)
        assert "upload.record_count: an upload of no records would replace north's current " \
            f"upload of {n} records" in str(refused.value)  # fmt: skip
        seen = {m.name: m for m in north.describe("shares").members}
        assert seen["north"].record_count == n and not seen["north"].started_unix
        header.allow_empty = True  # said: issued
        assert ticket(north, "shares", header).name.startswith("shares/north/")
    assert tags(world) == before and planned.mode == "two-server"


def test_a_two_server_upload_refused_at_its_ticket_leaves_no_upload_started(
    world: World, encoded: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`upload` asked the project's mode with a ticket of its own (no header) before the
    ticket for the upload's header: where that second one was refused (another secret's
    folder, say), the first was left as the member's upload started and not finished, its
    earlier upload not counted as held. The mode is asked without a ticket now."""
    members = encoded["north"].parent
    other_secret = tmp_path / "other.secret"
    assert main(["secret", "new", str(other_secret)]) == 0
    other = tmp_path / "other.enc"
    assert main(["encode", str(members / "north-police.csv"), "--schema", str(SCHEMA),
                 "--secret-file", str(other_secret), "--mapping",
                 str(members / "north-police.toml"), "--out", str(other), "--two-server",
                 "--quiet"]) == 0  # fmt: skip
    project = create(world, "shares", "two-server")
    token = project.tokens["north"]
    for name, folder, code in (("north", encoded["north"], 0), ("south", encoded["south"], 0),
                               ("north", other, 3)):  # fmt: skip
        assert world.cli("upload", str(folder), "--project", "shares",
                         token=project.tokens[name]) == code  # fmt: skip
    assert "different schema or secret" in capsys.readouterr().err
    with MatcherClient(world.target, token) as north:
        seen = {m.name: m for m in north.describe("shares").members}
    assert seen["north"].whole and not seen["north"].started_unix


def test_an_empty_upload_is_refused_at_its_commit_too_if_an_upload_of_records_came_first(
    matcher: Matcher, tmp_path: Path
) -> None:
    """Two uploads of one member at once: the empty one's header passed its check (the member
    held no records then), then the other one, of records, was stored before the empty one
    ended; the empty one replaced those records silently. Its stream is held open after its
    header (the matcher waiting for CLKs) while the other one is stored. Now it is checked
    again in the committing transaction (opsleft, 2026-12-07)."""
    with matcher.operator() as op:
        tokens = op.create_project("p", ["a", "b"]).tokens
    header = pb.UploadHeader(
        project="p",
        clk_bits=CLK_BITS,
        record_count=0,
        fingerprint=FINGERPRINT,
        sha256=hashlib.sha256(b"").hexdigest(),
    )
    ended = threading.Event()

    def held_open() -> Iterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=header)
        ended.wait()

    tmp = matcher.data_dir / "tmp"
    with grpc.insecure_channel(matcher.target) as channel:
        empty = stub(channel).Upload.future(held_open(), metadata=auth(tokens["a"]))
        try:  # its header checked: its file made in tmp/, the matcher waiting for CLKs
            deadline = time.monotonic() + 60
            while not any(tmp.glob("*.part")):
                assert time.monotonic() < deadline and not empty.done(), "no header read"
                time.sleep(0.01)
            full = ["--project", "p", "--server", matcher.target, "--token", tokens["a"]]
            assert main(["upload", str(folder_of(tmp_path / "x1.enc", 3)), *full, "-q"]) == 0
        finally:
            ended.set()
        with pytest.raises(grpc.RpcError) as refused:
            empty.result()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "an upload of no records would replace a's current upload of 3 records" in str(
        refused.value.details()
    )
    with matcher.member(tokens["a"]) as a:
        assert a.describe("p").members[0].record_count == 3
