"""Throwaway certificates for trials and tests: a CA, a server and a client certificate.

`make_certs(out, hosts)` writes, into `out`:

    ca.pem       the CA certificate: give it to members (--ca-cert) and to `serve --client-ca`
    ca.key       the CA's private key: only needed to issue more certificates; keep it away
    server.pem   the matcher's certificate (SANs: localhost, 127.0.0.1, ::1 and `hosts`)
    server.key   its key (`serve --tls-cert server.pem --tls-key server.key`)
    client.pem   a client certificate for mutual TLS (--client-cert)
    client.key   its key (--client-key)

`make_dask_certs(out, hosts)` writes a Dask cluster's own set (`blindmatch certs
--dask`): a CA of its own, so no member's certificate is ever accepted by the
cluster, and one certificate for each role, each usable to connect and to listen:

    dask-ca.pem          the cluster's CA: --tls-ca-file for every node, --dask-tls-ca for serve
    dask-ca.key          its key: only to issue more; keep it away
    dask-scheduler.pem   `dask scheduler --tls-cert` (and .key: --tls-key)
    dask-worker.pem      `dask worker --tls-cert` (and .key)
    dask-matcher.pem     `serve --dask-tls-cert` (and .key: --dask-tls-key)

Keys are ECDSA P-256, written readable by the owner only. These are for trials:
a real deployment uses certificates from the organisations' own PKI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blindmatch.client.errors import InputError
from blindmatch.client.files import write_bytes

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
DASK_ROLES = ("scheduler", "worker", "matcher")
DASK_FILES = (
    "dask-ca.pem",
    "dask-ca.key",
    *(f"dask-{role}.{ext}" for role in DASK_ROLES for ext in ("pem", "key")),
)


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "blindmatch trial"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@contextmanager
def _all_or_none(out: Path) -> Iterator[Callable[..., None]]:
    """A writer of a set's files, each whole and never over another (client/files.py
    `write_bytes`). Whatever ends the set part-way (SIGTERM in `blindmatch certs`, Ctrl-C,
    a full disk) deletes the files written, and `out` where it was made here: the whole set
    or none (before: some, which a second try refused to write beside)."""
    fresh = not out.exists()
    made: list[Path] = []

    def write(path: Path, data: bytes, *, private: bool) -> None:
        write_bytes(path, data, replace=False, mode=0o600 if private else 0o644)
        made.append(path)

    try:
        yield write
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        if fresh:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    days: int,
    *,
    ca: bool = False,
    usage: tuple[x509.ObjectIdentifier, ...] = (),
    hosts: list[str] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _prepare(out: Path, files: tuple[str, ...], hosts: list[str] | None, days: int) -> list[str]:
    """Check `out` holds none of `files` and make it; the certificates' host names."""
    if days < 1:
        raise InputError(f"--days {days}: certificates must be valid for at least a day")
    present = [name for name in files if (out / name).exists()]
    if present:
        raise InputError(
            f"{out}: already holds {', '.join(present)}; choose an empty folder "
            "(certificates are never overwritten)"
        )
    extra = [h.strip() for h in hosts or [] if h.strip()]
    out.mkdir(parents=True, exist_ok=True)
    return list(dict.fromkeys([*DEFAULT_HOSTS, *extra]))


def make_certs(out: str | Path, hosts: list[str] | None = None, days: int = 30) -> CertFiles:
    """Write a throwaway CA, server and client certificate into `out` (never overwriting)."""
    out = Path(out)
    with _all_or_none(out) as write:
        names = _prepare(out, FILES, hosts, days)
        ca_key, server_key, client_key = _key(), _key(), _key()
        ca = _issue("blindmatch trial CA", ca_key, ca_key, None, days, ca=True)
        server = _issue(
            names[0], server_key, ca_key, ca.subject, days,
            usage=(ExtendedKeyUsageOID.SERVER_AUTH,), hosts=names,
        )  # fmt: skip
        client = _issue(
            "blindmatch trial client", client_key, ca_key, ca.subject, days,
            usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        )  # fmt: skip
        files = CertFiles(*(out / name for name in FILES))
        pem = serialization.Encoding.PEM
        write(files.ca_cert, ca.public_bytes(pem), private=False)
        write(files.ca_key, _pem_key(ca_key), private=True)
        write(files.server_cert, server.public_bytes(pem), private=False)
        write(files.server_key, _pem_key(server_key), private=True)
        write(files.client_cert, client.public_bytes(pem), private=False)
        write(files.client_key, _pem_key(client_key), private=True)
    return files


def make_dask_certs(out: str | Path, hosts: list[str] | None = None, days: int = 30) -> list[Path]:
    """Write a Dask cluster's CA and its scheduler, worker and matcher certificates into `out`.

    Returns the files written, in DASK_FILES order. Dask's TLS checks the chain, not
    host names; the certificates name `hosts` all the same.
    """
    out = Path(out)
    with _all_or_none(out) as write:
        names = _prepare(out, DASK_FILES, hosts, days)
        ca_key = _key()
        ca = _issue("blindmatch trial Dask cluster CA", ca_key, ca_key, None, days, ca=True)
        pem = serialization.Encoding.PEM
        write(out / "dask-ca.pem", ca.public_bytes(pem), private=False)
        write(out / "dask-ca.key", _pem_key(ca_key), private=True)
        both = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        for role in DASK_ROLES:
            key = _key()
            cert = _issue(
                f"blindmatch Dask {role}", key, ca_key, ca.subject, days, usage=both, hosts=names
            )
            write(out / f"dask-{role}.pem", cert.public_bytes(pem), private=False)
            write(out / f"dask-{role}.key", _pem_key(key), private=True)
    return [out / name for name in DASK_FILES]
