"""A failed call to S1 or S2 says whether the party could have seen it (rpc/status.py
`never_sent`): a call gRPC failed before any connection carried it was never seen, so a
two-server batch whose S1 call went so is not spent (core/runjournal.py); a call that went
and was cut may have been. Real gRPC servers and channels on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from blindmatch.matcher import errors
from blindmatch.matcher.rpc.twoserver_peers import call_party
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.portheld import dead_port

pytestmark = pytest.mark.server


@pytest.fixture
def open_channel() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for c in opened:
        c.close()


def test_a_call_to_a_party_that_is_down_was_never_sent(
    open_channel: list[grpc.Channel],
) -> None:
    with dead_port() as port:  # nothing there all the while
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        open_channel.append(channel)
        stub = pb_grpc.TwoServerBlockingStub(channel)
        with pytest.raises(errors.Unavailable) as caught:
            call_party("S1", stub.Evaluate, pb.CircuitBatch(batch="b"), timeout=30)
    assert "S1 is unreachable" in str(caught.value)
    assert caught.value.sent is False


class _Holding(pb_grpc.TwoServerBlockingServicer):
    """An S1 that takes a batch and holds it until its server is stopped."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def Evaluate(self, request: pb.CircuitBatch, context: grpc.ServicerContext) -> pb.OutputShares:
        self.entered.set()
        self.release.wait(60)
        return pb.OutputShares()


def test_a_call_cut_after_the_party_took_it_may_have_been_seen(
    open_channel: list[grpc.Channel],
) -> None:
    server = grpc.server(ThreadPoolExecutor(2))
    holding = _Holding()
    pb_grpc.add_TwoServerBlockingServicer_to_server(holding, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    open_channel.append(channel)
    stub = pb_grpc.TwoServerBlockingStub(channel)
    failed: list[errors.ServiceError] = []

    def call() -> None:
        try:
            call_party("S1", stub.Evaluate, pb.CircuitBatch(batch="b"), timeout=60)
        except errors.ServiceError as exc:
            failed.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert holding.entered.wait(60), "S1 never took the batch"
        server.stop(grace=None)  # S1 gone with the batch in hand
        caller.join(60)
    finally:
        holding.release.set()
        server.stop(grace=None)
    assert len(failed) == 1
    assert failed[0].sent is True
