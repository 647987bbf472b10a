"""TLS and mutual TLS credentials for both ends, and the plaintext guards: `serve` listens
in plaintext only on loopback, and a client sends its token in plaintext only to loopback,
unless told otherwise in so many words."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    from cryptography import x509

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _read(path: str | None, what: str) -> bytes | None:
    """A certificate (chain) or private key file's bytes; what it holds is checked by
    `channel_credentials` and `server_credentials`, which know the flag it was given by."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror})") from None


CLIENT_FLAGS = ("--ca-cert", "--client-cert", "--client-key")


def channel_credentials(
    *,
    ca_cert: str | None,
    client_cert: str | None,
    client_key: str | None,
    tls: bool = False,
    flags: tuple[str, str, str] = CLIENT_FLAGS,
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the client (with `tls` and no `ca_cert`: the system's trusted
    CAs), or None for plaintext (loopback only, unless --insecure). A CA file with no
    certificate, a client certificate or key that is not one, or a key that is not its
    certificate's, is an InputError naming the file and its flag (`flags`: the CA's, the
    certificate's, the key's), before any connection (it was `cannot reach the matcher ...
    Failed to create security handshaker`, exit 4)."""
    ca_flag, cert_flag, key_flag = flags
    if (client_cert is None) != (client_key is None):
        raise InputError(f"{cert_flag} and {key_flag} go together")
    if ca_cert is None and client_cert is None and not tls:
        return None
    ca_pem = _read(ca_cert, "CA certificate")
    key_pem = _read(client_key, "client key")
    cert_pem = _read(client_cert, "client certificate")
    if ca_cert is not None and ca_pem is not None:
        _certificate(ca_pem, f"{ca_flag} {ca_cert}")
    if client_cert is not None and cert_pem is not None and key_pem is not None:
        assert client_key is not None
        _key_of(cert_pem, key_pem, (cert_flag, client_cert), (key_flag, client_key))
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
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
    assert key is not None and cert_pem is not None and key_pem is not None
    ca_pem = _read(client_ca, "client CA")
    _check_server_pems(cert, cert_pem, key, key_pem, client_ca, ca_pem)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


def _check_server_pems(
    cert: str, cert_pem: bytes, key: str, key_pem: bytes, ca: str | None, ca_pem: bytes | None
) -> None:
    """What gRPC would only find when it binds the port, and then blame on the port ("could
    not listen ... is the port taken"), said first, naming the file and its flag: a
    certificate or key that is not one, a key that is not the certificate's, a CA file
    with no certificate."""
    _key_of(cert_pem, key_pem, ("--tls-cert", cert), ("--tls-key", key))
    if ca is not None and ca_pem is not None:
        _certificate(ca_pem, f"--client-ca {ca}")


def _key_of(cert_pem: bytes, key_pem: bytes, cert: tuple[str, str], key: tuple[str, str]) -> None:
    """The certificate and its key, each of its kind and the one the other's: else an
    InputError naming the flag and file at fault (`cert`, `key`: flag and file). gRPC took
    any bytes for either."""
    from cryptography.hazmat.primitives import serialization

    certificate = _certificate(cert_pem, " ".join(cert))
    named = " ".join(key)
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # a key with a passphrase
        raise InputError(f"{named}: the key is encrypted; give it without a passphrase") from None
    except ValueError:
        raise InputError(
            f"{named}: not a PEM private key (a text file starting -----BEGIN PRIVATE KEY-----)"
        ) from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise InputError(
            f"{named} is not the key of {' '.join(cert)} (the certificate holds another "
            "public key): give the key the certificate was issued for"
        )


def _certificate(pem: bytes, named: str) -> x509.Certificate:
    """The first certificate of a PEM file, or an InputError naming it (`named`: its flag
    and file)."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise InputError(
            f"{named}: holds no PEM certificate (a text file starting -----BEGIN CERTIFICATE-----)"
        ) from None


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


TLS_SCHEME = "grpcs://"
PLAIN_SCHEME = "grpc://"


def client_target(server: str) -> tuple[str, bool]:
    """`--server`'s address for gRPC, and whether it asks for TLS: `grpcs://HOST:PORT` is
    TLS (the system's trusted CAs unless --ca-cert names one), `grpc://HOST:PORT` or a bare
    `HOST:PORT` plaintext unless TLS files are given."""
    if server.startswith(TLS_SCHEME):
        return server[len(TLS_SCHEME) :], True
    if "://" in server and not server.startswith(PLAIN_SCHEME):
        raise InputError(f"--server {server}: use HOST:PORT, or grpcs://HOST:PORT for TLS")
    server = server.removeprefix(PLAIN_SCHEME)
    if not _has_port(server):  # a typo ('localhost50051') read as a host on port 443
        raise InputError(
            f"--server {server!r}: expected HOST:PORT, e.g. 127.0.0.1:50051 (or "
            "grpcs://HOST:PORT for TLS)"
        )
    return server, False


def _has_port(address: str) -> bool:
    """Whether a plaintext client `address` ends in :PORT (a unix: socket needs none)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host, sep, port = address.rpartition(":")
    return bool(sep and host) and port.isdigit() and int(port) <= 65535


def is_loopback(address: str) -> bool:
    """Whether a client `address` (HOST:PORT, [V6]:PORT, HOST, unix:PATH) stays on this
    machine. Only what it says literally counts: a name is not resolved (`localhost` is
    the one name taken at its word), since what it resolves to can change."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    if address.startswith("["):
        host = address[1 : address.find("]")]
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or (":" in host and not _host_ok(host)):
            host = address  # no port given
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext_target(address: str, *, insecure: bool) -> None:
    """Refuse, before any connection, to send a token in plaintext off this machine."""
    if insecure or is_loopback(address):
        return
    raise InputError(
        f"refusing to send the token in plaintext to {address} (not a loopback address): "
        "pass --ca-cert with the CA that signed the matcher's certificate (or give the "
        f"server as {TLS_SCHEME}{address} to trust the system's CAs); --insecure sends it "
        "unencrypted, for a test network only (see docs/security.md)"
    )


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
