"""`connected` (rpc/twoserver_peers.py), what the combiner asks before S1's batch goes: a
real gRPC server on loopback, started, stopped and started again on its port. It reads the
channel's state with gRPC's public `subscribe` only, returns at once on a connected channel,
fails UNAVAILABLE (`evaluated` False) when none is made in time, and leaves no gRPC thread
failing on a channel closed just after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from blindmatch.matcher import errors
from blindmatch.matcher.rpc.twoserver_channel import channel
from blindmatch.matcher.rpc.twoserver_peers import connected

pytestmark = pytest.mark.server


def serve(port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


@pytest.fixture
def failed_threads() -> Iterator[list[BaseException]]:
    """Exceptions raised on any thread meanwhile (gRPC's connectivity poll's among them)."""
    seen: list[BaseException] = []
    before = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_value or RuntimeError())
    try:
        yield seen
    finally:
        threading.excepthook = before


def test_a_channel_to_a_server_up_is_connected_and_closing_it_at_once_fails_no_thread(
    failed_threads: list[BaseException],
) -> None:
    server, port = serve()
    try:
        for _ in range(5):  # batches one after another, the channel closed after the last
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            connected(channel, "S1")
            connected(channel, "S1")  # connected: not asked to connect again
            channel.close()
        time.sleep(0.5)  # beyond gRPC's connectivity poll period (0.2 s)
    finally:
        server.stop(None)
    assert failed_threads == []


def left_ready(channel: grpc.Channel, seconds: float = 10.0) -> None:
    """Wait until the channel has seen its server go (its state no longer READY): a stopped
    server's connection is noticed by the client a moment later, longer on a loaded host."""
    gone = threading.Event()

    def seen(state: grpc.ChannelConnectivity) -> None:
        if state is not grpc.ChannelConnectivity.READY:
            gone.set()

    channel.subscribe(seen)
    try:
        assert gone.wait(seconds), f"the channel still READY {seconds} s after its server stopped"
    finally:
        channel.unsubscribe(seen)


def test_a_server_stopped_is_unavailable_not_evaluated_and_connected_once_it_is_back() -> None:
    server, port = serve()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        connected(channel, "S1 (here)")
        server.stop(None).wait()
        left_ready(channel)
        with pytest.raises(errors.Unavailable) as failed:
            connected(channel, "S1 (here)", seconds=0.5)
        assert str(failed.value) == (
            "S1 (here) is unreachable (UNAVAILABLE: no connection in 0.5 s)"
        )
        assert failed.value.evaluated is False
        server, _ = serve(port)  # back on its port: the channel connects again when asked
        connected(channel, "S1 (here)", seconds=30)
    finally:
        channel.close()
        server.stop(None)


def test_a_port_nobody_serves_is_unavailable_in_the_time_given() -> None:
    server, port = serve()
    server.stop(None).wait()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(errors.Unavailable, match=r"no connection in 0\.3 s"):
            connected(channel, "S1", seconds=0.3)
    finally:
        channel.close()


def test_a_new_channel_to_a_party_back_on_its_address_does_not_inherit_a_failed_ones_back_off() -> (
    None
):
    """Two channels to one address (the matcher's kept channel and a check's, or a matcher
    started after another in one process): the second must reach a server that is up, even
    while the first is in back-off from when nothing listened there. With gRPC's global
    subchannel pool the second shared the first's failure and a call failed at once."""
    server, port = serve()
    server.stop(None)  # the address, now free
    first = channel(f"127.0.0.1:{port}", None)
    with pytest.raises(grpc.RpcError) as refused:
        first.unary_unary("/blindmatch.Test/Nothing")(b"", timeout=0.5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    server = grpc.server(futures.ThreadPoolExecutor(1))
    handler = grpc.method_handlers_generic_handler(
        "blindmatch.Test", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    second = channel(f"127.0.0.1:{port}", None)
    try:
        assert second.unary_unary("/blindmatch.Test/Echo")(b"up", timeout=5) == b"up"
    finally:
        first.close()
        second.close()
        server.stop(None)
