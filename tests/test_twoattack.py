"""S1 and S2 attacked as their roles' RPCs allow (twoattack, 2026-12-07): real role servers
on loopback with data dirs of their own; the test plays a member holding the matcher's
upload tickets and a curious combiner holding the parties' key (docs/governance/two-server.md
"What each party holds"). Each case failed on the code before it."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.sharing import SHARED_FOLDER, read_shared
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.convert import score_rule
from blindmatch.client.remote.twoserver import RoleClient, shares_sha256, ticket
from blindmatch.matcher.core import tickets
from blindmatch.matcher.domain import MAX_QUERY_RECORDS
from blindmatch.matcher.rpc.status import RETRYABLE_METADATA
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.rpc.twoserver_uploadguard import IN_ALL, PER_MEMBER
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests import twoserver_world
from tests.twoserver_world import MEMBER_KEY, World, create, flow, uploads_held_open

pytestmark = pytest.mark.server

encoded = twoserver_world.encoded  # the fixture: the members' folders, encoded --two-server


@dataclass
class Roles:
    s1: RunningRole
    s2: RunningRole
    key: str  # the parties' key: what the combiner presents

    def ticket(self, name: str) -> str:
        """The matcher's ticket for `name` (project/member/tag), as it signs one."""
        return tickets.issue(MEMBER_KEY, name, time.time() + tickets.TTL_SECONDS)


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1")  # fmt: skip
    try:
        yield Roles(s1, s2, key)
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


def upload(roles: Roles, name: str, folder: Path) -> int:
    """`folder`'s two-server upload to S1 and S2 under `name`: a project member's with the
    matcher's ticket, a stand-alone member's (no "/") with the members' key."""
    shared = read_shared(folder / SHARED_FOLDER)
    token = roles.ticket(name) if "/" in name else MEMBER_KEY
    for role, running in (("s1", roles.s1), ("s2", roles.s2)):
        with RoleClient(role, f"127.0.0.1:{running.port}", token) as c:
            c.upload(name, shared)
    return len(shared)


def test_a_combiner_cannot_run_members_of_two_projects_against_each_other(
    roles: Roles, encoded: dict[str, Path]
) -> None:
    """Before, S1 proposed (and S2 expanded and prepared) pairs between a member of one
    project and a member of another, so a matcher holding both projects linked members who
    never agreed to share with each other. Now S1 and S2 refuse, PERMISSION_DENIED."""
    a, b, c = "one/north/" + "a" * 24, "two/south/" + "b" * 24, "one/south/" + "c" * 24
    counts = {n: upload(roles, n, encoded[n.split("/")[1]]) for n in (a, b, c)}
    counts["north"] = upload(roles, "north", encoded["north"])
    metadata = (("authorization", f"Bearer {roles.key}"),)
    with (
        grpc.insecure_channel(f"127.0.0.1:{roles.s1.port}") as ch1,
        grpc.insecure_channel(f"127.0.0.1:{roles.s2.port}") as ch2,
    ):
        s1, s2 = pb_grpc.TwoServerBlockingStub(ch1), pb_grpc.TwoServerSharesStub(ch2)

        def propose(members: list[str]) -> list[pb.CandidatePairs]:
            request = pb.ProposeRequest(members=members, records=[counts[m] for m in members],
                                        threshold=0.8, fallback=True)  # fmt: skip
            return list(s1.Propose(request, metadata=metadata, timeout=60))

        assert propose([a, c])  # one project's members: proposed as before
        for members in ([a, b], [b, a], [a, "north"]):
            with pytest.raises(grpc.RpcError) as refused:
                propose(members)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, members
            assert "compares the uploads of one project only" in str(refused.value.details())
        # S2 refuses such a batch too (C's setup is checked after the members).
        batch = pb.CircuitBatch(batch="x1", member_a=a, member_b=b, records_a=counts[a],
                                records_b=counts[b], rows_a=b"\0\0\0\0", rows_b=b"\0\0\0\0",
                                cutoffs=[0.8])  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            s2.Prepare(batch, metadata=metadata, timeout=60)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'one', 'two'" in str(refused.value.details())


def answered_retryable(exc: grpc.RpcError) -> bool:
    return RETRYABLE_METADATA in tuple(exc.trailing_metadata() or ())


def _parts(name: str, rows: int) -> Iterator[pb.SharedPart]:
    """S2's parts of an upload of `rows` records (zero shares: S2 checks only their sizes)."""
    seal = bytes(32)
    for clk in (0, 1):
        left = rows
        while left:
            n = min(left, 500)
            yield pb.SharedPart(member=name, clk=clk, clk_bits=1024, rows=n, shares=bytes(128 * n),
                                popcount_shares=bytes(4 * n), seal_key=seal)  # fmt: skip
            left -= n


def test_a_query_ticket_admits_no_more_records_than_a_query_holds(roles: Roles) -> None:
    """Before, S1 and S2 held whatever a ticket's stream sent (no cap: a query ticket, which
    a member asks the matcher for, admitted an endless stream, held in memory until the
    unclaimed query was forgotten ten minutes later). A query's upload past
    MAX_QUERY_RECORDS is refused now, INVALID_ARGUMENT, and nothing of it is held."""
    name = tickets.query_name("one", "north", "d" * 24)
    with grpc.insecure_channel(f"127.0.0.1:{roles.s2.port}") as ch:
        s2 = pb_grpc.TwoServerSharesStub(ch)
        metadata = (("authorization", f"Bearer {roles.ticket(name)}"),)
        with pytest.raises(grpc.RpcError) as refused:
            s2.Upload(_parts(name, MAX_QUERY_RECORDS + 1), metadata=metadata, timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"past {MAX_QUERY_RECORDS:,} records, the most a query holds" in str(
            refused.value.details()
        )
        assert name not in roles.s2.service.held
        got = s2.Upload(_parts(name, MAX_QUERY_RECORDS), metadata=metadata, timeout=60)
        assert got.records == MAX_QUERY_RECORDS


def test_idle_upload_streams_cannot_take_every_thread_of_a_role(roles: Roles) -> None:
    """Before, a member holding upload tickets opened S1's sixteen request threads' worth of
    upload streams that sent nothing, and the combiner's calls (Holds here; Propose,
    Evaluate) waited for a thread: every project at S1 stopped. Now S1 keeps at most
    IN_ALL members' uploads open (PER_MEMBER of one project member) and refuses the next
    at once, RESOURCE_EXHAUSTED marked retryable; the parties' calls are answered."""
    done = threading.Event()

    def idle(name: str) -> Iterator[pb.SharedPart]:
        yield pb.SharedPart(member=name, clk=0, clk_bits=1024, bands=1)
        done.wait()

    def bad(name: str) -> Iterator[pb.SharedPart]:
        yield pb.SharedPart(member=name, clk=7)  # refused at once, were it read

    with grpc.insecure_channel(f"127.0.0.1:{roles.s1.port}") as ch:
        s1 = pb_grpc.TwoServerBlockingStub(ch)

        def upload(name: str, parts: Iterator[pb.SharedPart]) -> grpc.Future:
            token = (("authorization", f"Bearer {roles.ticket(name)}"),)
            return s1.Upload.future(parts, metadata=token, timeout=120)

        names = [f"one/m{k // PER_MEMBER}/{k:08x}" for k in range(IN_ALL)]
        opened = [upload(n, idle(n)) for n in names]
        try:
            guard = roles.s1.service.upload_guard  # made at the first upload
            while guard.open_uploads() < IN_ALL:
                done.wait(0.05)
            for name in ("one/m0/ffffffff", "one/other/ffffffff"):
                with pytest.raises(grpc.RpcError) as refused:
                    upload(name, bad(name)).result()
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, name
                said = str(refused.value.details())
                assert "S1 refused this upload" in said and "retry" in said
                assert answered_retryable(refused.value)
            metadata = (("authorization", f"Bearer {roles.key}"),)
            assert s1.Holds(pb.HoldsRequest(names=names[:1]), metadata=metadata).held == [False]
        finally:
            done.set()
            for f in opened:
                with contextlib.suppress(grpc.RpcError):
                    f.result()


world = twoserver_world.world  # the fixture: S1, S2 and a matcher that is their combiner


def test_a_replayed_ticket_is_refused_and_halves_of_different_sizes_name_the_member(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """north's ticket replayed after the matcher took its upload: before, S1 then held other
    shares under the name whose header the matcher holds (here west's, 24 records for 140).
    A ticket admits one upload to each role now (FAILED_PRECONDITION). Halves of different
    sizes sent under a fresh ticket are refused at the run, and the message said a plain
    rerun would start it again (it fails the same way); it names north, who must upload
    again, now."""
    project = create(world, "halves", "two-server")
    flow(world, project, encoded)
    s1_at = f"127.0.0.1:{world.roles['s1'].port}"
    name = next(n for n in world.roles["s1"].service.held if n.startswith("halves/north/"))
    west = read_shared(encoded["west"] / SHARED_FOLDER)
    replayed = tickets.issue(MEMBER_KEY, name, time.time() + tickets.TTL_SECONDS)
    with RoleClient("s1", s1_at, replayed) as s1, pytest.raises(RejectedError) as refused:
        s1.upload(name, west)
    assert "a ticket admits one upload to each role" in str(refused.value)
    # A fresh ticket: S1 gets west's shares, S2 north's, the matcher north's header.
    north = read_shared(encoded["north"] / SHARED_FOLDER)
    folder = read_encoded(encoded["north"])
    with MatcherClient(world.target, project.tokens["north"]) as client:
        t = ticket(client, "halves")
        for role, sent in (("s1", west), ("s2", north)):
            with RoleClient(role, getattr(t, role), t.ticket) as c:
                c.upload(t.name, sent, folder.rule)
        header = pb.UploadHeader(
            project="halves", clk_bits=0, record_count=len(north),
            fingerprint=folder.fingerprint, sha256=shares_sha256(north.s2.shares),
            schema_digest=folder.schema_digest, rule=score_rule(folder.rule),
            two_server_bits=[8 * s.shape[1] for s in north.s2.shares],
            client_upload_id="halves-north", two_server_ticket=t.ticket,
        )  # fmt: skip
        requests = iter([pb.UploadRequest(header=header)])
        client._stub.Upload(requests, metadata=client._metadata())
    capsys.readouterr()
    assert world.cli("run", "--project", "halves", token=project.tokens["south"]) == 1
    err = capsys.readouterr().err
    assert "(the uploads differ)" in err, err
    assert "north's upload is not whole" in err and "north uploaded again" in err, err
    assert "a plain rerun" not in err, err


def test_an_upload_refused_as_busy_is_sent_again_once_a_place_is_free(
    roles: Roles, encoded: dict[str, Path]
) -> None:
    """With IN_ALL members' uploads open at S1 (many members' queries at once, say), the next
    is refused as busy: the client sent it once and failed (the member saw RESOURCE_EXHAUSTED
    and had to ask again). RoleClient now sends it again after a backoff, and it is stored
    once a place is free."""
    shared = read_shared(encoded["west"] / SHARED_FOLDER)
    stored: list[int] = []
    failed: list[BaseException] = []

    def send() -> None:
        name = "one/west/00000001"
        try:
            with RoleClient("s1", f"127.0.0.1:{roles.s1.port}", roles.ticket(name)) as c:
                stored.append(c.upload(name, shared))
        except BaseException as exc:  # reported below
            failed.append(exc)

    sender = threading.Thread(target=send)
    with uploads_held_open(roles.s1) as done:
        guard = roles.s1.service.upload_guard
        sender.start()
        while guard.refused == 0 and sender.is_alive():  # refused as busy at least once
            done.wait(0.02)
    sender.join(timeout=60)
    assert not failed, failed
    assert stored == [len(shared)]
    assert guard.refused >= 1
