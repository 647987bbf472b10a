"""The benchmarks' own gRPC servers keep their port to themselves, as the project's servers do
(matcher/rpc/listen.py `EXCLUSIVE_PORT`): with gRPC's default SO_REUSEPORT a second server
(another benchmark's, a parallel run's) bound the same port too and took some of the calls.
Each server is asked for here as the benchmark starts it, and a second server on its port
must not bind."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest

from benchmarks import forget_left, grpcfloor, grpcproxy
from blindmatch.matcher.rpc.listen import add_port
from blindmatch.matcher.rpc.status import never_sent
from tests.support import dead_port, port_held


@contextmanager
def hung() -> Iterator[int]:
    server, port = forget_left.hung_s1()
    try:
        yield port
    finally:
        server.stop(None)


@contextmanager
def proxied() -> Iterator[int]:
    front = grpcproxy.proxy("127.0.0.1:1", lambda name: None)
    try:
        yield int(front.address.rsplit(":", 1)[1])
    finally:
        front.stop(None)


@contextmanager
def floor(kind: str) -> Iterator[int]:
    served = grpcfloor.Served(kind)
    try:
        yield served.port
    finally:
        served.stop()


@pytest.mark.parametrize(
    "started",
    [hung, proxied, lambda: floor("threads"), lambda: floor("aio")],
    ids=["forget_left hung S1", "grpcproxy", "grpcfloor threads", "grpcfloor aio"],
)
def test_a_benchmarks_server_keeps_its_port_to_itself(
    started: Callable[[], contextmanager[int]],
) -> None:
    with started() as port:
        assert port
        other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC's default
        try:
            assert add_port(other, f"127.0.0.1:{port}", None) == 0
        finally:
            other.stop(None)


def test_a_port_held_while_its_test_server_is_down_is_bound_by_no_other_and_refuses_calls() -> None:
    """tests/support.py `port_held`: while a test's server is down, its port is given to no
    other server (a parallel worker's took it once, and the test's client reached that one),
    and a call to it finds nothing there, as to a stopped server."""
    first = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = add_port(first, "127.0.0.1:0", None)
    first.start()
    first.stop(None)
    with port_held(port):
        other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC's default
        try:
            assert add_port(other, f"127.0.0.1:{port}", None) == 0
        finally:
            other.stop(None)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/nothing/There")(b"", timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    again = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert add_port(again, f"127.0.0.1:{port}", None) == port  # released for its restart
    finally:
        again.stop(None)


def test_a_dead_port_refuses_calls_as_an_empty_one_and_is_bound_by_no_other() -> None:
    """tests/portheld.py `dead_port`: for a test that calls where no server is, a port bound
    and never listening: a call to it fails as at a port nobody bound (UNAVAILABLE, refused,
    never sent: matcher/rpc/status.py `never_sent`), and while it is held no bind is given
    it, neither one to port 0 (a parallel worker's server once reached the test's client at a
    port `free_port` had let go) nor one naming it; released as the block ends."""
    with dead_port() as port:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            channel.unary_unary("/nothing/There")(b"", timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert never_sent(caught.value), caught.value.details()
        assert "Connection refused" in (caught.value.details() or "")
        for _ in range(1000):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's servers
                s.bind(("127.0.0.1", 0))
                assert s.getsockname()[1] != port
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                s.bind(("127.0.0.1", port))
        other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC's default
        try:
            assert add_port(other, f"127.0.0.1:{port}", None) == 0
        finally:
            other.stop(None)
    again = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert add_port(again, f"127.0.0.1:{port}", None) == port  # let go as the block ended
    finally:
        again.stop(None)
