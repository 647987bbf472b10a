"""Binding a gRPC server to its address, shared by the matcher, the look-up servers and the
two-server roles: plaintext or TLS, and one error when the address cannot be listened on."""

from __future__ import annotations

import grpc


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
