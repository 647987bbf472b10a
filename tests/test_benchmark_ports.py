"""The benchmarks' own gRPC servers keep their port to themselves, as the project's servers do
(matcher/rpc/listen.py `EXCLUSIVE_PORT`): with gRPC's default SO_REUSEPORT a second server
(another benchmark's, a parallel run's) bound the same port too and took some of the calls.
Each server is asked for here as the benchmark starts it, and a second server on its port
must not bind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest

from benchmarks import forget_left, grpcfloor, grpcproxy
from blindmatch.matcher.rpc.listen import add_port
from tests.support import port_held


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
