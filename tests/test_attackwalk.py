"""A malicious member and a malicious network client against a real matcher (attackwalk,
2026-12-07): what they tried that worked, each fixed here.

- Uploads started together each passed the disk check alone (free space less the
  reserve), then filled the disk between them: two members' uploads of most of the free
  space were both admitted and ate `--min-free-mb`'s reserve, which keeps room for the
  databases and the audit log. Room is now promised to an upload while it is received
  (storage/diskroom.py).
- The audit log's tail cut off on disk while the matcher ran verified intact (a shorter
  chain is a valid chain); the matcher now remembers the latest entry it knows was
  committed and `audit verify` fails when it is gone or replaced.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests import support
from tests.support import ADMIN_TOKEN, Matcher, auth, upload_messages

MIB = 1024 * 1024
CLK = 128  # bytes of a 1,024-bit CLK


def _header(project: str, clks: bytes) -> pb.UploadRequest:
    return upload_messages(project, clks)[0]


def _held_upload(project: str, clks: bytes, go: threading.Event) -> Iterator[pb.UploadRequest]:
    """An upload that sends its header and first MiB, then waits for `go`."""
    yield _header(project, clks)
    yield pb.UploadRequest(clks=clks[:MIB])
    go.wait()
    for at in range(MIB, len(clks), MIB):
        yield pb.UploadRequest(clks=clks[at : at + MIB])


def _part_written(data_dir: Path, nbytes: int) -> bool:
    return any(p.stat().st_size >= nbytes for p in (data_dir / "tmp").glob("*.part"))


@contextmanager
def _on_small_disk(
    tmp_path: Path, reserve: int
) -> Iterator[tuple[Path, pb_grpc.MatcherStub, dict[str, str]]]:
    """A matcher on a 24 MiB file system keeping `reserve` free, with project "trial" of
    north and south: (the disk, a stub, each member's token)."""
    with support.small_disk(tmp_path / "disk", "24m") as disk:
        server = create_server("127.0.0.1:0", disk / "data", ADMIN_TOKEN, min_free_bytes=reserve)
        try:
            with closing(grpc.insecure_channel(f"127.0.0.1:{server.port}")) as channel:
                stub = support.stub(channel)
                made = stub.CreateProject(
                    pb.CreateProjectRequest(name="trial", members=["north", "south"]),
                    metadata=auth(ADMIN_TOKEN),
                )
                yield disk, stub, dict(made.tokens)
        finally:
            server.stop(grace=None)


@pytest.mark.server
def test_uploads_in_flight_cannot_share_out_the_reserve(tmp_path: Path) -> None:
    """North's upload of 10 MiB is being received on a 24 MiB disk with 6 MiB kept in
    reserve; south's of 10 MiB more would leave 3.5 MiB. It was admitted (each checked
    against the free space alone) and the reserve eaten; it is refused before a byte."""
    with _on_small_disk(tmp_path, 6 * MIB) as (disk, stub, tokens):
        data = disk / "data"
        north, south = auth(tokens["north"]), auth(tokens["south"])
        go = threading.Event()
        big = bytes(range(256)) * (10 * MIB // 256)
        answers: list[object] = []

        def send_north() -> None:
            try:
                answers.append(stub.Upload(_held_upload("trial", big, go), metadata=north))
            except grpc.RpcError as exc:
                answers.append(exc)

        sender = threading.Thread(target=send_north)
        sender.start()
        try:
            deadline = time.monotonic() + 30
            while not _part_written(data, MIB) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _part_written(data, MIB)
            other = big[::-1]
            with pytest.raises(grpc.RpcError) as refused:
                stub.Upload(iter(upload_messages("trial", other)), metadata=south)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "promised to uploads in progress" in str(refused.value.details())
            # The matcher stays up for everyone else meanwhile.
            shown = stub.DescribeProject(pb.DescribeProjectRequest(project="trial"), metadata=south)
            assert shown.member == "south"
        finally:
            go.set()
            sender.join()
        [reply] = answers
        assert isinstance(reply, pb.UploadReply), reply
        assert reply.sha256 == hashlib.sha256(big).hexdigest()
        free = shutil.disk_usage(disk).free
        assert free >= 6 * MIB, free
        small = other[: 2 * MIB]  # what the reserve still allows is taken
        stub.Upload(iter(upload_messages("trial", small)), metadata=south)


def _verify(stub: pb_grpc.MatcherStub) -> pb.VerifyAuditReply:
    reply: pb.VerifyAuditReply = stub.VerifyAudit(
        pb.VerifyAuditRequest(), metadata=auth(ADMIN_TOKEN)
    )
    return reply


def _cut_tail(data_dir: Path, entries: int) -> None:
    """Delete the log's last `entries` entries, as someone with the database (not the key)
    could, while the matcher runs."""
    with closing(sqlite3.connect(data_dir / "blindmatch.sqlite")) as db, db:
        [(head,)] = db.execute("SELECT MAX(seq) FROM audit").fetchall()
        db.execute("DELETE FROM audit WHERE seq > ?", (head - entries,))


@pytest.mark.server
@pytest.mark.parametrize(
    ("cut", "then_more", "said"),
    [
        (3, 0, "entries were cut off its end on disk"),
        (1, 1, "not the entry this matcher wrote there"),
    ],
    ids=["cut", "cut-and-written-again"],
)
def test_a_tail_cut_off_the_audit_log_on_disk_fails_verify(
    matcher: Matcher, cut: int, then_more: int, said: str
) -> None:
    """A shorter chain is a valid chain: before, cutting entries off the end while the
    matcher ran (and letting it write new ones over their seqs) verified intact unless the
    operator passed an anchor. The matcher remembers the latest entry it knows committed."""
    with closing(grpc.insecure_channel(matcher.target)) as channel:
        stub = support.stub(channel)
        for name in ("one", "two"):
            stub.CreateProject(
                pb.CreateProjectRequest(name=name, members=["north", "south"]),
                metadata=auth(ADMIN_TOKEN),
            )
        assert _verify(stub).ok
        _cut_tail(matcher.data_dir, cut)
        for k in range(then_more):
            stub.CreateProject(
                pb.CreateProjectRequest(name=f"more{k}", members=["north", "south"]),
                metadata=auth(ADMIN_TOKEN),
            )
        found = _verify(stub)
        assert not found.ok
        assert any(said in p for p in found.problems), found.problems
        assert not _verify(stub).ok  # and it goes on failing


@pytest.mark.server
def test_a_log_left_whole_still_verifies_after_many_writes(matcher: Matcher) -> None:
    """The remembered entry follows the log: entries written in other transactions (a
    project made), group commits (a verify's own entry) and verifies all leave it intact."""
    with closing(grpc.insecure_channel(matcher.target)) as channel:
        stub = support.stub(channel)
        for k in range(3):
            stub.CreateProject(
                pb.CreateProjectRequest(name=f"p{k}", members=["north", "south"]),
                metadata=auth(ADMIN_TOKEN),
            )
            found = _verify(stub)
            assert found.ok, found.problems


def _index_change(project: str, records: int, tag: str) -> Iterator[pb.IndexChange]:
    yield pb.IndexChange(
        header=pb.IndexHeader(
            project=project, clk_bits=1024, fingerprint=bytes(32), end_follows=True
        )
    )
    step = 8192  # 1 MiB of CLKs a message
    for at in range(0, records, step):
        n = min(step, records - at)
        refs = [f"{tag}-{k}" for k in range(at, at + n)]
        clks = hashlib.shake_256(f"{tag}{at}".encode()).digest(n * CLK)
        yield pb.IndexChange(put=pb.IndexPut(refs=refs, clks=clks))
    yield pb.IndexChange(end=pb.IndexEnd(put_refs=records))


@pytest.mark.server
def test_an_index_change_keeps_the_reserve(tmp_path: Path) -> None:
    """`--min-free-mb` kept uploads out of the reserve, but an index change was never
    checked: a member could grow index.sqlite into it (and past it, change after change).
    A change whose records (twice: the write-ahead log, then the database) would leave less
    than the reserve free is refused whole, before anything is stored; a small one is not."""
    reserve = 16 * MIB
    with _on_small_disk(tmp_path, reserve) as (disk, stub, tokens):
        north = auth(tokens["north"])
        with pytest.raises(grpc.RpcError) as refused:
            stub.ChangeIndex(_index_change("trial", 4 * 8192, "big"), metadata=north)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "for this index change" in str(refused.value.details())
        assert shutil.disk_usage(disk).free >= reserve
        listed = list(stub.ListIndex(pb.ListIndexRequest(project="trial"), metadata=north))
        assert sum(len(m.refs) for m in listed) == 0
        done = stub.ChangeIndex(_index_change("trial", 100, "small"), metadata=north)
        assert done.added == 100


HIDDEN_IN_PURPOSES = [
    "case \x9b2J",  # C1 CSI: an escape sequence in a terminal showing `audit export`
    "case \u202e7-PO",  # right-to-left override: the rest of the line shown reversed
    "case \u2066x\u2069",  # bidi isolates
    "case\u200b 1",  # zero-width space: two purposes that look the same
    "case \U000e0041",  # a tag character (invisible ASCII)
    "case\u2028two lines",  # line separator
    "case\xad1",  # soft hyphen
]


@pytest.mark.server
def test_a_purpose_cannot_hide_or_reorder_what_the_audit_log_shows(matcher: Matcher) -> None:
    """`check_purpose` refused C0 controls only: a member's purpose could carry C1 controls
    (U+009B starts an escape sequence in the operator's terminal), bidi overrides and
    invisible characters into the audit log, changing how the log reads where it is shown.
    Each is refused, naming the character; letters of any script, and joiners, still pass."""
    with closing(grpc.insecure_channel(matcher.target)) as channel:
        stub = support.stub(channel)
        made = stub.CreateProject(
            pb.CreateProjectRequest(name="trial", members=["north", "south"]),
            metadata=auth(ADMIN_TOKEN),
        )
        north = auth(made.tokens["north"])

        def query(purpose: str) -> pb.QueryReply:
            reply: pb.QueryReply = stub.Query(
                pb.QueryRequest(
                    project="trial", purpose=purpose, clk_bits=1024, fingerprint=bytes(32),
                    clks=bytes(CLK),
                ),
                metadata=north,
            )  # fmt: skip
            return reply

        for purpose in HIDDEN_IN_PURPOSES:
            with pytest.raises(grpc.RpcError) as refused:
                query(purpose)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, purpose
            assert "U+" in str(refused.value.details()), refused.value.details()
        plain = ["Ärende 7", "قضية\u200c1", "案件 12"]
        for purpose in plain:
            query(purpose)
        logged = [
            e.purpose
            for e in stub.ExportAudit(pb.ExportAuditRequest(), metadata=auth(ADMIN_TOKEN))
            if e.purpose
        ]
        assert logged == plain


def _put_one(stub: pb_grpc.MatcherStub, token: list[tuple[str, str]], clk: bytes, ref: str) -> None:
    stub.ChangeIndex(
        iter(
            [
                pb.IndexChange(
                    header=pb.IndexHeader(
                        project="trial", clk_bits=1024, fingerprint=bytes(32), end_follows=True
                    )
                ),
                pb.IndexChange(put=pb.IndexPut(refs=[ref], clks=clk)),
                pb.IndexChange(end=pb.IndexEnd(put_refs=1)),
            ]
        ),
        metadata=token,
    )


@pytest.mark.server
def test_a_members_audit_view_does_not_count_what_others_wrote(matcher: Matcher) -> None:
    """A member's view carried the log's own seqs and prev_hashes: South puts a record in
    its index and looks at the project; where North's watch matched the record, North's
    notification entry lay between the two, and South's view showed the gap (seq + 2, and a
    prev_hash that was not its index change's hash): South learnt at once that a partner
    watches that person. The view is numbered by its own order and withholds prev_hash."""
    with closing(grpc.insecure_channel(matcher.target)) as channel:
        stub = support.stub(channel)
        made = stub.CreateProject(
            pb.CreateProjectRequest(name="trial", members=["north", "south"]),
            metadata=auth(ADMIN_TOKEN),
        )
        north, south = auth(made.tokens["north"]), auth(made.tokens["south"])
        stub.SetQueryLimits(
            pb.QueryLimits(project="trial", allow_watch=True), metadata=auth(ADMIN_TOKEN)
        )
        watched = hashlib.shake_256(b"the watched person").digest(CLK)
        watch = stub.Watch(
            pb.QueryRequest(
                project="trial", purpose="op-1", clk_bits=1024, fingerprint=bytes(32),
                clks=watched,
            ),
            metadata=north,
        )  # fmt: skip
        try:
            assert next(watch).ready
            other = hashlib.shake_256(b"somebody else").digest(CLK)
            _put_one(stub, south, other, "r-other")
            stub.DescribeProject(pb.DescribeProjectRequest(project="trial"), metadata=south)
            _put_one(stub, south, watched, "r-watched")
            assert next(watch).HasField("result")  # North was notified (and it was logged)
            stub.DescribeProject(pb.DescribeProjectRequest(project="trial"), metadata=south)
        finally:
            watch.cancel()
        view = list(stub.ExportAudit(pb.ExportAuditRequest(project="trial"), metadata=south))
        full = list(stub.ExportAudit(pb.ExportAuditRequest(), metadata=auth(ADMIN_TOKEN)))
    notified = [e for e in full if e.actor == "north" and e.action == "watch.notify"]
    assert len(notified) == 1  # the operator's log holds North's notification
    assert [e.seq for e in view] == list(range(1, len(view) + 1))
    assert {e.prev_hash for e in view} == {""}
    steps = [(e.action, e.seq) for e in view if e.action in ("index.change", "project.describe")]
    assert [a for a, _ in steps] == ["index.change", "project.describe"] * 2
    gaps = [steps[k + 1][1] - steps[k][1] for k in (0, 2)]
    assert gaps == [1, 1]  # the same whether or not a partner's watch matched


def _people(seed: int, n: int) -> bytes:
    """`n` CLKs of 1,024 bits, about a quarter of the bits set, as a member's records."""
    rng = np.random.default_rng(seed)
    return np.packbits(rng.random((n, 1024)) < 0.25, axis=1).tobytes()


def _run_as_north_sees(stub: pb_grpc.MatcherStub, name: str, shared: int) -> list[pb.RunStatus]:
    """North (one record, sharing nobody) and east and south, 100 records each, `shared` of
    them the same people: every status of the run North watches, and its latest as North's
    DescribeProject shows it."""
    made = stub.CreateProject(
        pb.CreateProjectRequest(
            name=name, members=["north", "south", "east"], disclosure=pb.DISCLOSURE_COUNT
        ),
        metadata=auth(ADMIN_TOKEN),
    )
    tokens = {m: auth(t) for m, t in made.tokens.items()}
    both = _people(1, shared)
    uploads = {
        "north": _people(2, 1),
        "east": both + _people(3, 100 - shared),
        "south": both + _people(4, 100 - shared),
    }
    for member, clks in uploads.items():
        stub.Upload(iter(upload_messages(name, clks)), metadata=tokens[member])
    run = stub.StartRun(pb.StartRunRequest(project=name), metadata=tokens["north"])
    seen = list(
        stub.WatchRun(pb.WatchRunRequest(project=name, run_id=run.run_id), metadata=tokens["north"])
    )
    assert seen[-1].state == pb.RUN_STATE_DONE
    shown = stub.DescribeProject(pb.DescribeProjectRequest(project=name), metadata=tokens["north"])
    return [*seen, shown.latest_run]


@pytest.mark.server
def test_a_run_s_progress_does_not_tell_a_member_what_others_share(matcher: Matcher) -> None:
    """RunStatus.work_done and work_total were the run's own counts (pairs compared, then
    solved), every pair of members': North, one record sharing nobody, read in them how many
    people east and south share (0, 50: 0 and 50 comparisons). A member saw thousandths;
    since srvleft it sees no stage's progress at all (their times told the same,
    tests/test_srvleft.py)."""
    with closing(grpc.insecure_channel(matcher.target)) as channel:
        stub = support.stub(channel)
        apart = _run_as_north_sees(stub, "apart", 0)
        close = _run_as_north_sees(stub, "close", 50)
    for seen in (apart, close):
        final = seen[-1]
        assert (final.work_done, final.work_total, final.groups) == (0, 0, 0)
        assert {(s.work_done, s.work_total, s.tasks_total) for s in seen} == {(0, 0, 0)}
        assert {s.stage for s in seen} <= {"", "running", "done"}
