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
