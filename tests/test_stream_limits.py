"""Streams whose client stops taking what the matcher sends are ended (issue 16, finding 1).
The attacks with streams that never send, against a separate `blindmatch serve`, are in
test_hostile_streams.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from blindmatch.client import MatcherClient
from blindmatch.matcher.core.tokens import token_hash
from blindmatch.matcher.errors import Unauthenticated
from blindmatch.matcher.rpc.refusals import Strangers
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import ADMIN_TOKEN, auth, stub


def test_strangers_are_refused_per_address_for_a_minute() -> None:
    now = [0.0]
    strangers = Strangers(3, clock=lambda: now[0])
    member, stranger = token_hash("bm_member"), token_hash("bm_guess")
    strangers.good(member)
    for _ in range(3):
        strangers.admit("ipv4:10.0.0.9", stranger)
        strangers.refused("ipv4:10.0.0.9")
    with pytest.raises(Unauthenticated, match="--max-auth-failures"):
        strangers.admit("ipv4:10.0.0.9", stranger)
    strangers.admit("ipv4:10.0.0.9", member)  # authenticated recently: looked up as ever
    strangers.admit("ipv4:10.0.0.8", stranger)  # another address: its own count
    now[0] += 61
    strangers.admit("ipv4:10.0.0.9", stranger)  # a minute later


@pytest.mark.slow  # a 150,000-record index: the flow-control windows fill
def test_a_stream_whose_client_takes_nothing_is_ended_and_frees_its_thread(
    tmp_path: Path,
) -> None:
    """A member lists a 150,000-record index and stops reading after the first message: the
    matcher's thread waits to send the rest until the idle limit, then ends the stream,
    saying why, and counts it out (its thread free again). The upload and the last, reading
    client run at a 2 s idle limit (10 s to take a message); the listing nobody reads at
    0.5 s (2.5 s to take one: the wait this test is about; its first message, taken, comes
    within ~0.3 s), so the test waits 2.5 s for the matcher to end it, not 10 s."""
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, stream_idle=2)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            token = op.create_project("trial", ["north", "south"]).tokens["north"]
        puts = [(f"ref-{i:08d}-{'x' * 110}", os.urandom(128)) for i in range(150_000)]
        with MatcherClient(target, token) as north:
            north.change_index("trial", clk_bits=1024, fingerprint=bytes(range(32)), puts=puts)
        # As the client's channel, but without BDP probing: with it the transport's window can
        # grow to take in the whole listing unread under load (seen once), and the server's
        # thread would never wait.
        big = [("grpc.max_receive_message_length", 16 * 1024**2), ("grpc.http2.bdp_probe", 0)]
        server.streams.idle_seconds = 0.5  # read at its next tick (StreamGuard._loop)
        with grpc.insecure_channel(target, options=big) as channel:
            listing = stub(channel).ListIndex(
                pb.ListIndexRequest(project="trial"), metadata=auth(token), timeout=60
            )
            next(listing)
            deadline = time.monotonic() + 60
            while server.streams.open_streams("trial", "north"):  # not reading meanwhile
                assert time.monotonic() < deadline, "a stream nobody reads was never ended"
                time.sleep(0.1)
            with pytest.raises(grpc.RpcError) as ended:
                for _ in listing:
                    pass
        assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "took no message for 2.5 s" in (ended.value.details() or "")  # 5 times 0.5 s
        assert server.streams.open_streams("trial", "north") == 0
        server.streams.idle_seconds = 2
        with MatcherClient(target, token) as north:
            assert len(north.list_index("trial")) == 150_000, "a client that reads gets it all"
    finally:
        server.stop(grace=None)
