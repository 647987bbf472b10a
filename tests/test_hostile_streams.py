"""Attacks on a running `blindmatch serve` through its streams (issue 16, findings 1, 2, 5).

Each test starts the real server as a separate process, mounts the attack with raw gRPC
calls, and checks that it does no harm while legitimate use still works.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import grpc
import pytest

from benchmarks.cliflow import Served, serve
from blindmatch.client import MatcherClient
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import auth, db_rows, stub, upload_messages

pytestmark = pytest.mark.slow  # a separate server process

FINGERPRINT = bytes(range(32))


def channels(target: str, n: int) -> list[grpc.Channel]:
    """`n` channels, each over its own connection (as `n` hostile clients would be)."""
    return [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n)
    ]


def silent(first: pb.IndexChange | pb.UploadRequest | None, until: threading.Event) -> Iterator:
    """A request stream that sends `first` (if any), then nothing until `until` is set."""
    if first is not None:
        yield first
    until.wait()


def watch_request(project: str) -> pb.QueryRequest:
    return pb.QueryRequest(
        project=project,
        purpose="case 7",
        clk_bits=1024,
        fingerprint=FINGERPRINT,
        clks=os.urandom(128),
    )


def code_of(call: grpc.Future) -> grpc.StatusCode | None:
    """The status a finished call ended with (None: still open after a moment)."""
    try:
        call.result(timeout=0.05)
    except grpc.FutureTimeoutError:
        return None
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def settled(calls: list, n: int) -> None:  # type: ignore[type-arg]
    """Wait until `n` of `calls` have ended (those the matcher refuses at once)."""
    deadline = time.monotonic() + 30
    while sum(1 for c in calls if c.done()) < n:
        assert time.monotonic() < deadline, "the matcher did not refuse streams past a cap"
        time.sleep(0.05)


def wait_for(calls: list[grpc.Future], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for call in calls:
        with suppress(grpc.RpcError, grpc.FutureTimeoutError):
            call.result(timeout=max(0.05, deadline - time.monotonic()))


def project_for(served: Served, members: list[str]) -> dict[str, str]:
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("trial", members).tokens
        op.set_query_limits("trial", allow_watch=True)
    return tokens


def test_500_hostile_streams_leave_a_member_answered_and_end_when_idle(tmp_path: Path) -> None:
    """300 streams without a valid token and a member's 250 streams (Watch, ChangeIndex,
    Upload: up to and past its caps) that never send: a valid member's DescribeProject still
    answers; strangers are refused at once, streams past a cap at once, idle ones after the
    idle limit, each with a status that says why."""
    with serve(tmp_path / "data", "--stream-idle-seconds", "10") as served, ExitStack() as stack:
        tokens = project_for(served, ["alice", "mallory"])
        for member in ("alice", "mallory"):  # each has used the matcher before the attack
            with MatcherClient(served.target, tokens[member]) as client:
                client.describe("trial")
        until = threading.Event()
        stack.callback(until.set)
        hostile = channels(served.target, 8)
        for ch in hostile:
            stack.callback(ch.close)
        strangers = [
            stub(hostile[i % 4]).ChangeIndex.future(
                silent(None, until),
                metadata=auth("bm_not_a_token") if i % 2 else None,
                timeout=60,
            )
            for i in range(300)
        ]
        mallory = auth(tokens["mallory"])
        watches = [
            stub(hostile[4 + i % 4]).Watch(watch_request("trial"), metadata=mallory, timeout=60)
            for i in range(200)
        ]
        settled(watches, 200 - 8)  # the watches first, then the index changes, then the uploads
        changes = [
            stub(hostile[4 + i % 4]).ChangeIndex.future(
                silent(None, until), metadata=mallory, timeout=60
            )
            for i in range(10)
        ]
        settled(changes, 10 - 2)
        uploads = [
            stub(hostile[4 + i % 4]).Upload.future(
                silent(None, until), metadata=mallory, timeout=60
            )
            for i in range(40)
        ]
        settled(uploads, 40 - (32 - 8 - 2))  # every hostile stream is at the matcher by now

        # A valid member is answered meanwhile, again and again (a call waiting behind the
        # hostile streams would end DEADLINE_EXCEEDED at its 10 s deadline and fail here).
        with grpc.insecure_channel(served.target) as mine:
            for _ in range(5):
                info = stub(mine).DescribeProject(
                    pb.DescribeProjectRequest(project="trial"),
                    metadata=auth(tokens["alice"]),
                    timeout=10,
                )
                assert info.member == "alice"

        # Strangers were refused at once: none holds anything.
        wait_for(strangers, 10)
        assert {code_of(c) for c in strangers} == {grpc.StatusCode.UNAUTHENTICATED}

        # Mallory's streams past its caps were refused at once, saying which cap.
        busy = grpc.StatusCode.RESOURCE_EXHAUSTED
        refused = [w for w in watches if w.done() and w.code() is busy]
        open_watches = [w for w in watches if w not in refused]
        assert len(open_watches) == 8, "the cap on one member's Watch streams"
        assert "at most 8" in (refused[0].details() or "")
        assert [code_of(c) for c in changes].count(busy) == 10 - 2
        assert [code_of(c) for c in uploads].count(busy) == 40 - (32 - 8 - 2), "32 in all"

        # Streams that send nothing end after the idle limit, saying so; watches stay.
        wait_for(changes + uploads, 20)
        idle = [c for c in changes + uploads if code_of(c) is grpc.StatusCode.DEADLINE_EXCEEDED]
        assert len(idle) == 2 + 22
        assert "--stream-idle-seconds" in (idle[0].exception().details() or "")
        assert all(w.is_active() for w in open_watches)

        # Mallory's legitimate use works again once its idle streams are gone.
        with MatcherClient(served.target, tokens["mallory"]) as client:
            summary = client.change_index(
                "trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=[("r1", os.urandom(128))]
            )
        assert summary.record_count == 1
        for w in open_watches:
            w.cancel()


def rss(pid: int) -> int:
    """The resident memory of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def huge_change(project: str, mib: int) -> Iterator[pb.IndexChange]:
    """An index change of about `mib` MiB of puts (1,024-bit CLKs), made as it is sent."""
    yield pb.IndexChange(
        header=pb.IndexHeader(
            project=project, clk_bits=1024, fingerprint=FINGERPRINT, end_follows=True
        )
    )
    per_message = 4 * 1024**2 // 128
    clks = os.urandom(per_message * 128)
    for m in range(mib // 4):
        refs = [f"r{m:04d}.{i:06d}" for i in range(per_message)]
        yield pb.IndexChange(put=pb.IndexPut(refs=refs, clks=clks))


def test_an_index_change_past_its_limit_is_refused_and_the_matcher_does_not_grow(
    tmp_path: Path,
) -> None:
    """A member streaming 160 MiB of puts in one change (limit 8 MiB) is refused with the
    limit named, nothing of it is applied, and the server's memory grows by far less than
    the change (it held every put until the stream ended: 160 MiB grew it by over 400 MiB)."""
    with serve(tmp_path / "data", "--max-index-change-mib", "8") as served:
        tokens = project_for(served, ["alice", "mallory"])
        before = rss(served.process.pid)
        with grpc.insecure_channel(served.target) as ch, pytest.raises(grpc.RpcError) as refused:
            stub(ch).ChangeIndex(
                huge_change("trial", 160), metadata=auth(tokens["mallory"]), timeout=120
            )
        grown = rss(served.process.pid) - before
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "8 MiB" in (refused.value.details() or "")
        assert "--max-index-change-mib" in (refused.value.details() or "")
        assert grown < 64 * 1024**2, f"the server grew by {grown / 1024**2:.0f} MiB"

        # Nothing of it was applied; a change within the limit is.
        with MatcherClient(served.target, tokens["mallory"]) as client:
            assert client.list_index("trial") == {}
            puts = [(f"ok{i}", os.urandom(128)) for i in range(1000)]
            summary = client.change_index(
                "trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=puts
            )
            assert summary.record_count == 1000
            assert len(client.list_index("trial")) == 1000


def test_an_address_refused_too_often_is_refused_unread_but_known_members_go_on(
    tmp_path: Path,
) -> None:
    """50 calls with guessed tokens from one address (limit 20 a minute): the 21st on are
    refused without their token being looked up, saying why; a member whose token
    authenticated from there before, and the operator, are still answered."""
    with serve(tmp_path / "data", "--max-auth-failures", "20") as served:
        tokens = project_for(served, ["alice", "bob"])
        with MatcherClient(served.target, tokens["alice"]) as alice:
            alice.describe("trial")
        with grpc.insecure_channel(served.target) as ch:
            said = []
            for i in range(50):
                with pytest.raises(grpc.RpcError) as refused:
                    stub(ch).DescribeProject(
                        pb.DescribeProjectRequest(project="trial"),
                        metadata=auth(f"bm_guess_{i}"),
                        timeout=10,
                    )
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                said.append(refused.value.details() or "")
            unread = [d for d in said if "--max-auth-failures" in d]
            assert len(unread) == 30
            assert "--max-auth-failures" not in "".join(said[:20])

            info = stub(ch).DescribeProject(
                pb.DescribeProjectRequest(project="trial"), metadata=auth(tokens["alice"])
            )
            assert info.member == "alice"
            with MatcherClient(served.target, served.admin_token) as op:  # and the operator
                op.set_query_limits("trial", allow_watch=True)
            # A member new to this address waits out the minute (the price of the limit).
            with pytest.raises(grpc.RpcError) as refused:
                stub(ch).DescribeProject(
                    pb.DescribeProjectRequest(project="trial"), metadata=auth(tokens["bob"])
                )
            assert "--max-auth-failures" in (refused.value.details() or "")


# -- revocation ends what is open (finding 5) ------------------------------------------------


def test_a_watch_opened_before_its_token_is_revoked_is_ended_and_told_nothing_after(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "data") as served, ExitStack() as stack:
        tokens = project_for(served, ["alice", "bob"])
        ch = stack.enter_context(grpc.insecure_channel(served.target))
        clk = os.urandom(128)
        request = watch_request("trial")
        request.clks = clk
        watch = stub(ch).Watch(request, metadata=auth(tokens["alice"]), timeout=60)
        stack.callback(watch.cancel)
        assert next(watch).ready
        bob = stack.enter_context(MatcherClient(served.target, tokens["bob"]))
        bob.change_index("trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=[("b1", clk)])
        event = next(watch)
        assert event.HasField("result") or event.HasField("count"), "it works till revoked"

        with MatcherClient(served.target, served.admin_token) as op:
            op.revoke_token("trial", "alice")
        with pytest.raises(grpc.RpcError) as ended:
            next(watch)  # ended by the revocation (its 60 s deadline would be DEADLINE_EXCEEDED)
        assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (ended.value.details() or "")
        bob.change_index("trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=[("b2", clk)])
        with pytest.raises(grpc.RpcError):
            next(watch)  # nothing more arrives

        # Rotated, the member watches again with its new token.
        with MatcherClient(served.target, served.admin_token) as op:
            new_token = op.rotate_token("trial", "alice")
        again = stub(ch).Watch(request, metadata=auth(new_token), timeout=60)
        stack.callback(again.cancel)
        assert next(again).ready


def held_upload(project: str, clks: bytes, sent: threading.Event, go: threading.Event) -> Iterator:
    """An upload that sends its header and half its CLKs, then waits for `go` to send the
    rest."""
    header, body = upload_messages(project, clks)
    yield header
    half = len(clks) // 2
    yield pb.UploadRequest(clks=body.clks[:half])
    sent.set()
    go.wait(timeout=30)
    yield pb.UploadRequest(clks=body.clks[half:])


def test_an_upload_begun_before_its_token_is_revoked_is_not_committed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve(data) as served, ExitStack() as stack:
        tokens = project_for(served, ["alice", "bob"])
        ch = stack.enter_context(grpc.insecure_channel(served.target))
        sent, go = threading.Event(), threading.Event()
        stack.callback(go.set)
        clks = os.urandom(128 * 100)
        upload = stub(ch).Upload.future(
            held_upload("trial", clks, sent, go), metadata=auth(tokens["alice"]), timeout=60
        )
        assert sent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not any((data / "tmp").iterdir()):  # the matcher is writing the first half
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with MatcherClient(served.target, served.admin_token) as op:
            op.revoke_token("trial", "alice")
        go.set()  # the rest is sent after the revocation
        with pytest.raises(grpc.RpcError) as refused:
            upload.result(timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert db_rows(data, "uploads") == [], "an upload sent after revocation was committed"
        with MatcherClient(served.target, served.admin_token) as op:
            entries = [e for e in op.audit("trial") if e.get("action") == "upload"]
            assert entries == []

        # Rotated, the member uploads with its new token.
        with MatcherClient(served.target, served.admin_token) as op:
            new_token = op.rotate_token("trial", "alice")
        reply = stub(ch).Upload(iter(upload_messages("trial", clks)), metadata=auth(new_token))
        assert reply.record_count == 100
        assert len(db_rows(data, "uploads")) == 1
