"""TLS and mutual TLS credentials for both ends, and the plaintext guard for `serve`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from blindmatch.client.errors import InputError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def channel_credentials(
    *, ca_cert: str | None, client_cert: str | None, client_key: str | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the client, or None for plaintext (loopback only)."""
    if (client_cert is None) != (client_key is None):
        raise InputError("--client-cert and --client-key go together")
    if ca_cert is None and client_cert is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_cert, "CA certificate"),
        private_key=_read(client_key, "client key"),
        certificate_chain=_read(client_cert, "client certificate"),
    )


def server_credentials(
    *, cert: str | None, key: str | None, client_ca: str | None
) -> grpc.ServerCredentials | None:
    """TLS (with `client_ca`: mutual TLS) for `serve`, or None for plaintext."""
    if (cert is None) != (key is None):
        raise InputError("--tls-cert and --tls-key go together")
    if cert is None:
        if client_ca is not None:
            raise InputError("--client-ca needs --tls-cert and --tls-key")
        return None
    cert_pem = _read(cert, "server certificate")
    key_pem = _read(key, "server key")
    assert cert_pem is not None and key_pem is not None
    ca_pem = _read(client_ca, "client CA")
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


def listen_address(listen: str) -> tuple[str, int]:
    """`--listen`'s host (brackets off an IPv6 address) and port: `127.0.0.1:50051`,
    `[::1]:50051` and `::1:50051` (the last colon ends an IPv6 address without brackets)."""
    host, sep, port = listen.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or not _host_ok(host):
        raise InputError(
            f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051"
        )
    return host, int(port)


def _host_ok(host: str) -> bool:
    """A name or IPv4 address (no colon), or a whole IPv6 address."""
    if ":" not in host:
        return "[" not in host and "]" not in host
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def grpc_address(host: str, port: int) -> str:
    """HOST:PORT as gRPC (and a person) reads it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_listen_address(listen: str, *, secure: bool, allow: bool) -> None:
    """Refuse plaintext anywhere but loopback unless explicitly allowed."""
    host, _ = listen_address(listen)
    if secure or allow or host in LOOPBACK_HOSTS:
        return
    raise InputError(
        f"--listen {listen}: refusing plaintext gRPC on a non-loopback address; give "
        "--tls-cert and --tls-key (see docs/security.md), or pass "
        "--insecure-listen-on-network if you really mean it"
    )
