"""Binding a gRPC server to its address, shared by the matcher, the look-up servers and the
two-server roles: plaintext or TLS, and one error when the address cannot be listened on."""

from __future__ import annotations

import errno
import socket

import grpc

# Each server's port its own: gRPC sets SO_REUSEPORT by default on Linux, so a second matcher,
# look-up server or two-server role started on a port another of this user's processes
# listens on started too, and the kernel shared the connections between the two (a client
# reached either, at random). Without it the second is refused: `cannot_listen`.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


def add_port(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `server` to `address`, with TLS when `credentials` are given: the port bound, or 0
    where it cannot listen there."""
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:  # newer gRPC raises where older returned 0
        return 0


class CannotListen(OSError):
    """A server's bind failed (`cannot_listen`): the command line asks `port_in_use` again,
    to say a port taken since its early probe as that probe says it (options.py
    `refuse_taken_port`), rather than this error's guess."""


def cannot_listen(address: str) -> OSError:
    """The error a server start raises when `add_port` could not bind `address`."""
    return CannotListen(
        f"could not listen on {address} (is the port taken, or the address not this machine's?)"
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket listens on `host`:`port` (port 0: never), by a probe bound and
    let go at once: for a start to say so before it makes anything (`serve`'s new data dir),
    and without gRPC's own error line. A probe, not a promise: the port may be taken between
    it and the server's bind, which `add_port` still refuses (`cannot_listen`)."""
    if port == 0:
        return False
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:  # (a host that does not resolve: the server's bind says so)
        return False
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port held only by closed connections' TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False
