"""A response stream the matcher ends from outside its handler (a token revoked or rotated, an
erasure, an expiry, `admin end-project`, a client that takes no message) reaches the client
with the matcher's status, a message saying why and `blindmatch-status` in the trailing
metadata (docs/protocol.md "Who answered"); before streamstatus (2026-12-07) such an end
came with the status and message only, as if gRPC might have made it up. Raw gRPC stubs
against a real matcher on loopback."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.matcher.rpc.status import ANSWERED_METADATA
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import ADMIN_TOKEN, Clock, Matcher, Org, auth, encode, start, stub

FINGERPRINT = bytes(range(32))
pytestmark = pytest.mark.server


def open_watch(matcher: Matcher, token: str) -> tuple[grpc.Channel, grpc.Call]:
    with matcher.operator() as op:
        op.set_query_limits("trial", allow_watch=True)
    request = pb.QueryRequest(
        project="trial", purpose="case 7", clk_bits=1024, fingerprint=FINGERPRINT,
        clks=os.urandom(128),
    )  # fmt: skip
    channel = grpc.insecure_channel(matcher.target)
    watch = stub(channel).Watch(request, metadata=auth(token), timeout=30)
    assert next(watch).ready
    return channel, watch


def ended(stream: Iterator[object]) -> grpc.RpcError:
    """How `stream` ended, every message it still carried taken. (Its deadline would end it
    DEADLINE_EXCEEDED without the metadata: the assertions tell the matcher's end from it.)"""
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    return caught.value


def answered_as(exc: grpc.RpcError, code: grpc.StatusCode, *words: str) -> None:
    assert exc.code() is code, exc
    for word in words:
        assert word in (exc.details() or ""), exc.details()
    assert (ANSWERED_METADATA, code.name) in tuple(exc.trailing_metadata() or ())


def test_a_watch_ended_by_revocation_rotation_or_erasure_says_the_matcher_answered(
    matcher: Matcher, project: ProjectTokens
) -> None:
    channel, watch = open_watch(matcher, project.tokens["north"])
    with channel, matcher.operator() as op:
        token = op.rotate_token("trial", "north")
        answered_as(ended(watch), grpc.StatusCode.UNAUTHENTICATED, "this watch, open before")
    channel, watch = open_watch(matcher, token)
    with channel, matcher.operator() as op:
        op.revoke_token("trial", "north")
        answered_as(ended(watch), grpc.StatusCode.UNAUTHENTICATED, "revoked")
    channel, watch = open_watch(matcher, project.tokens["south"])
    with channel, matcher.member(project.tokens["south"]) as south:
        south.erase("trial")
        answered_as(ended(watch), grpc.StatusCode.FAILED_PRECONDITION, "erased its data")


def test_a_watch_ended_by_expiry_or_by_the_operator_says_the_matcher_answered(
    tmp_path: Path,
) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock)
    try:
        with matcher.operator() as op:
            expiring = op.create_project("trial", ["north", "south"],
                                         expires_unix=int(clock() + 3600)).tokens  # fmt: skip
        channel, watch = open_watch(matcher, expiring["north"])
        with channel:
            clock.advance(7200)
            matcher.server.sweeper.sweep()
            answered_as(ended(watch), grpc.StatusCode.NOT_FOUND, "expired")
        with matcher.operator() as op:
            tokens = op.create_project("trial2", ["north", "south"]).tokens
            op.set_query_limits("trial2", allow_watch=True)
        request = pb.QueryRequest(project="trial2", purpose="case 7", clk_bits=1024,
                                  fingerprint=FINGERPRINT, clks=os.urandom(128))  # fmt: skip
        with grpc.insecure_channel(matcher.target) as channel:
            watch = stub(channel).Watch(request, metadata=auth(tokens["north"]), timeout=30)
            assert next(watch).ready
            stub(channel).EndProject(
                pb.EndProjectRequest(project="trial2", reason="agreement terminated"),
                metadata=auth(ADMIN_TOKEN),
                timeout=30,
            )
            answered_as(ended(watch), grpc.StatusCode.NOT_FOUND, "trial2")
    finally:
        matcher.server.stop(grace=None)


def test_a_run_watch_ended_by_revocation_or_the_operator_says_the_matcher_answered(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path
) -> None:
    """A run queued and never handed to the runs: its watch waits until the matcher ends it."""
    for name, org in orgs.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", encode(org, tmp_path / f"{name}.encoded"))
    run, _ = matcher.server.store.create_run("trial")

    def watch_run(channel: grpc.Channel, token: str) -> grpc.Call:
        statuses = stub(channel).WatchRun(
            pb.WatchRunRequest(project="trial", run_id=run.id), metadata=auth(token), timeout=30
        )
        next(statuses)
        return statuses

    with grpc.insecure_channel(matcher.target) as channel:
        statuses = watch_run(channel, project.tokens["north"])
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
        answered_as(ended(statuses), grpc.StatusCode.UNAUTHENTICATED, "revoked")
        statuses = watch_run(channel, project.tokens["south"])
        stub(channel).EndProject(
            pb.EndProjectRequest(project="trial", reason="agreement terminated"),
            metadata=auth(ADMIN_TOKEN), timeout=30,
        )  # fmt: skip
        answered_as(ended(statuses), grpc.StatusCode.NOT_FOUND, "trial")


# As the client's channel, but without BDP probing: with it the transport's window can grow to
# take in the whole listing unread, and the server's thread would never wait.
UNREAD = [("grpc.max_receive_message_length", 16 * 1024**2), ("grpc.http2.bdp_probe", 0)]


def until_ended(matcher: Matcher) -> None:
    """Until the matcher has ended north's stream (the client reads nothing meanwhile)."""
    deadline = time.monotonic() + 60
    while not matcher.server.streams.ended_streams("trial", "north"):
        assert time.monotonic() < deadline, "a stream nobody reads was never ended"
        time.sleep(0.05)


@pytest.fixture
def listed(tmp_path: Path) -> Iterator[tuple[Matcher, str]]:
    """A matcher whose project's north holds a 150,000-record index: a listing of it fills
    the flow-control windows of a client that reads nothing."""
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, stream_idle=2)
    matcher = Matcher(server, tmp_path / "data", ADMIN_TOKEN)
    try:
        with matcher.operator() as op:
            token = op.create_project("trial", ["north", "south"]).tokens["north"]
        puts = [(f"ref-{i:08d}-{'x' * 110}", os.urandom(128)) for i in range(150_000)]
        with matcher.member(token) as north:
            north.change_index("trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=puts)
        yield matcher, token
    finally:
        server.stop(grace=None)


@pytest.mark.slow  # a 150,000-record index
def test_a_listing_nobody_reads_or_whose_token_is_revoked_says_the_matcher_answered(
    listed: tuple[Matcher, str],
) -> None:
    """The matcher ends a listing whose client takes nothing for 5 times the idle limit, and
    one whose token is revoked while it waits to send: the client that then reads gets what
    was sent and the matcher's status, with `blindmatch-status`."""
    matcher, token = listed
    matcher.server.streams.idle_seconds = 1.0  # read at its next tick
    with grpc.insecure_channel(matcher.target, options=UNREAD) as channel:
        listing = stub(channel).ListIndex(
            pb.ListIndexRequest(project="trial"), metadata=auth(token), timeout=120
        )
        next(listing)
        until_ended(matcher)
        answered_as(ended(listing), grpc.StatusCode.DEADLINE_EXCEEDED, "took no message for 5 s")
    matcher.server.streams.idle_seconds = 60.0
    with grpc.insecure_channel(matcher.target, options=UNREAD) as channel:
        listing = stub(channel).ListIndex(
            pb.ListIndexRequest(project="trial"), metadata=auth(token), timeout=120
        )
        next(listing)
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
        answered_as(ended(listing), grpc.StatusCode.UNAUTHENTICATED, "revoked")
