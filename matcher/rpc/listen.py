"""Binding a gRPC server to its address, shared by the matcher, the look-up servers and the
two-server roles: plaintext or TLS, and one error when the address cannot be listened on."""

from __future__ import annotations

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


def cannot_listen(address: str) -> OSError:
    """The error a server start raises when `add_port` could not bind `address`."""
    return OSError(
        f"could not listen on {address} (is the port taken, or the address not this machine's?)"
    )
