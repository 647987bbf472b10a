"""Transport security: TLS and mutual TLS end to end, `blindmatch certs`, the plaintext guard."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from cryptography import x509

from benchmarks.cliflow import ROOT, blindmatch, serve
from blindmatch.cli import main
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError, UnavailableError
from blindmatch.client.remote import tls
from blindmatch.client.tools.certs import CertFiles, make_certs
from blindmatch.matcher.server import RunningServer, create_server
from tests.support import (
    ADMIN_TOKEN,
    NORTH_CSV,
    NORTH_MAP,
    PERSON_SCHEMA,
    STRONG_SECRET,
    Matcher,
    Org,
    cli_server,
    encode_all,
)


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return encode_all(orgs, tmp_path)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"), ["matcher.example.org", "10.1.2.3"])


def start(tmp_path: Path, certs: CertFiles, *, mutual: bool) -> RunningServer:
    credentials = tls.server_credentials(
        cert=str(certs.server_cert),
        key=str(certs.server_key),
        client_ca=str(certs.ca_cert) if mutual else None,
    )
    return create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, credentials=credentials)


@pytest.fixture
def tls_server(tmp_path: Path, certs: CertFiles) -> Iterator[RunningServer]:
    server = start(tmp_path, certs, mutual=False)
    yield server
    server.stop(grace=None)


@pytest.fixture
def mtls_server(tmp_path: Path, certs: CertFiles) -> Iterator[RunningServer]:
    server = start(tmp_path, certs, mutual=True)
    yield server
    server.stop(grace=None)


def client(
    server: RunningServer, token: str, certs: CertFiles | None, *, with_cert: bool = False
) -> MatcherClient:
    credentials = (
        tls.channel_credentials(
            ca_cert=str(certs.ca_cert),
            client_cert=str(certs.client_cert) if with_cert else None,
            client_key=str(certs.client_key) if with_cert else None,
        )
        if certs
        else None
    )
    return MatcherClient(f"127.0.0.1:{server.port}", token, credentials=credentials, timeout=10)


# -- blindmatch certs ---------------------------------------------------------------------


def test_certs_makes_a_ca_a_server_and_a_client_certificate(certs: CertFiles) -> None:
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    client_cert = x509.load_pem_x509_certificate(certs.client_cert.read_bytes())
    assert server.issuer == ca.subject == client_cert.issuer
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "matcher.example.org"}
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    }
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_certs_never_overwrites(certs: CertFiles) -> None:
    before = certs.ca_cert.read_bytes()
    with pytest.raises(InputError, match=r"already holds ca\.pem"):
        make_certs(certs.ca_cert.parent)
    assert certs.ca_cert.read_bytes() == before


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out", str(tmp_path / "c"), "--hosts", "a.example", "--days", "2"]) == 0
    assert "--tls-cert" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]
    )


# -- TLS and mutual TLS -------------------------------------------------------------------


def test_the_whole_flow_works_over_tls(
    tls_server: RunningServer, certs: CertFiles, encoded: dict[str, Encoded]
) -> None:
    with client(tls_server, ADMIN_TOKEN, certs) as op:
        project = op.create_project("secure", ["north", "south"])
    for name, enc in encoded.items():
        with client(tls_server, project.tokens[name], certs) as member:
            member.upload("secure", enc)
    with client(tls_server, project.tokens["north"], certs) as member:
        run = member.start_run("secure")
        assert list(member.watch_run("secure", run.run_id))[-1].groups == 3
        assert len(member.results("secure").hits) == 3


@pytest.mark.server
def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server: RunningServer) -> None:
    with client(tls_server, ADMIN_TOKEN, None) as op, pytest.raises(UnavailableError):
        op.create_project("nope", ["a", "b"])


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: RunningServer, certs: CertFiles
) -> None:
    with client(mtls_server, ADMIN_TOKEN, certs) as op, pytest.raises(UnavailableError) as err:
        op.create_project("nope", ["a", "b"])
    assert "--client-cert" in str(err.value)  # the hint says what to pass
    with client(mtls_server, ADMIN_TOKEN, certs, with_cert=True) as op:
        assert op.create_project("yes", ["a", "b"]).project == "yes"


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: RunningServer, certs: CertFiles, tmp_path: Path
) -> None:
    stranger = make_certs(tmp_path / "stranger")
    credentials = tls.channel_credentials(
        ca_cert=str(certs.ca_cert),
        client_cert=str(stranger.client_cert),
        client_key=str(stranger.client_key),
    )
    target = f"127.0.0.1:{mtls_server.port}"
    with (
        MatcherClient(target, ADMIN_TOKEN, credentials=credentials, timeout=10) as op,
        pytest.raises(UnavailableError),
    ):
        op.create_project("nope", ["a", "b"])


@pytest.mark.slow
def test_serve_and_the_cli_over_mutual_tls(tmp_path: Path, certs: CertFiles) -> None:
    (tmp_path / "north.csv").write_text(NORTH_CSV, encoding="utf-8")
    (tmp_path / "north.toml").write_text(NORTH_MAP, encoding="utf-8")
    (tmp_path / "secret").write_text(STRONG_SECRET)
    blindmatch(
        "encode", str(tmp_path / "north.csv"), "--schema", str(PERSON_SCHEMA),
        "--secret-file", str(tmp_path / "secret"), "--mapping", str(tmp_path / "north.toml"),
        "--out", str(tmp_path / "north.encoded"), "--quiet",
    )  # fmt: skip
    tls_args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
                "--client-ca", str(certs.ca_cert)]  # fmt: skip
    client_env = {
        "BLINDMATCH_CA_CERT": str(certs.ca_cert),
        "BLINDMATCH_CLIENT_CERT": str(certs.client_cert),
        "BLINDMATCH_CLIENT_KEY": str(certs.client_key),
    }
    # TLS makes a network address acceptable without --insecure-listen-on-network.
    with serve(tmp_path / "data", *tls_args, listen="0.0.0.0:0") as served:
        env = {**client_env, "BLINDMATCH_ADMIN_TOKEN": served.admin_token}
        created = blindmatch(
            "project", "create", "p", "--members", "north,south", "--json",
            "--server", served.target, env=env,
        )  # fmt: skip
        token = json.loads(created)["tokens"]["north"]
        blindmatch("upload", str(tmp_path / "north.encoded"), "--project", "p",
                   "--token", token, "--server", served.target, env=client_env)  # fmt: skip
        with pytest.raises(RuntimeError, match="exited 4"):  # no client certificate
            blindmatch("project", "show", "p", "--token", token, "--server", served.target,
                       env={"BLINDMATCH_CA_CERT": str(certs.ca_cert)})  # fmt: skip
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0


# -- the plaintext guard -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_plaintext_is_fine_on_loopback(host: str) -> None:
    tls.check_listen_address(f"{host}:50051", secure=False, allow=False)


def test_plaintext_on_a_network_address_needs_the_loud_flag() -> None:
    with pytest.raises(InputError, match="refusing plaintext gRPC on a non-loopback address"):
        tls.check_listen_address("10.0.0.5:50051", secure=False, allow=False)
    tls.check_listen_address("10.0.0.5:50051", secure=False, allow=True)
    tls.check_listen_address("10.0.0.5:50051", secure=True, allow=False)


@pytest.mark.slow
def test_serve_listens_on_the_network_in_plaintext_only_when_told_to(tmp_path: Path) -> None:
    with serve(tmp_path / "data", "--insecure-listen-on-network", listen="0.0.0.0:0") as served:
        env = {"BLINDMATCH_ADMIN_TOKEN": served.admin_token}
        out = blindmatch("project", "create", "p", "--members", "a,b", "--json",
                         "--server", served.target, env=env)  # fmt: skip
        assert json.loads(out)["project"] == "p"


def test_client_key_without_certificate_is_a_usage_error(certs: CertFiles) -> None:
    with pytest.raises(InputError, match="go together"):
        tls.channel_credentials(ca_cert=None, client_cert=None, client_key=str(certs.client_key))


def test_tls_files_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(InputError, match=re.escape(f"{missing}: cannot read the CA certificate")):
        tls.channel_credentials(ca_cert=str(missing), client_cert=None, client_key=None)
    assert not os.path.exists(missing)


# -- the client's plaintext guard (issue 16: the token went in plaintext to any host) -------


def network_address() -> str:
    """This machine's own address on a network interface (not loopback), or skip."""
    for far in ("198.51.100.1", "10.255.255.1", "192.0.2.1"):  # documentation addresses
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((far, 9))  # no packet is sent: it only picks a route
            except OSError:
                continue
            address = str(s.getsockname()[0])
        if not address.startswith("127."):
            return address
    pytest.skip("no network interface besides loopback")


class Listener:
    """A bare TCP listener on every interface that records whoever connects (and what
    they send), standing in for a host on the network that is not the matcher."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                data = b""
                with suppress(OSError):
                    while chunk := conn.recv(65536):
                        data += chunk
                self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@pytest.mark.server
def test_the_client_sends_no_token_in_plaintext_off_this_machine(
    listener: Listener, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{network_address()}:{listener.port}"
    with pytest.raises(InputError, match="--ca-cert") as refused:
        MatcherClient(target, "bm_secret_token")
    assert "refusing to send the token in plaintext" in str(refused.value)
    code = main(["project", "show", "p", "--token", "bm_secret_token", "--server", target])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--ca-cert" in err and "grpcs://" in err and "--insecure" in err
    for address in ("10.255.255.1:50051", "matcher.example.org:50051", "grpc://10.0.0.5:1"):
        with pytest.raises(InputError, match="not a loopback address"):
            MatcherClient(address, "bm_secret_token")  # refused before any connection
    time.sleep(0.5)
    assert listener.received == []  # nobody connected, so no token went anywhere

    # The listener is real: told --insecure in so many words, the client does connect.
    code = main(["project", "show", "p", "--token", "bm_secret_token", "--server", target,
                 "--insecure"])  # fmt: skip
    assert code == 4
    deadline = time.monotonic() + 10
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.received


def test_plaintext_to_loopback_still_works(matcher: Matcher) -> None:
    for i, host in enumerate(("127.0.0.1", "localhost", "grpc://127.0.0.1")):
        with MatcherClient(f"{host}:{matcher.server.port}", matcher.admin_token) as op:
            op.create_project(f"p{i}", ["a", "b"])


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:1", True), ("127.3.4.5:1", True), ("localhost:1", True), ("[::1]:1", True),
     ("::1", True), ("unix:/run/bm.sock", True), ("10.0.0.5:1", False), ("[::2]:1", False),
     ("localhost.evil.example:1", False), ("127.0.0.1.nip.io:1", False), ("0.0.0.0:1", False)],
)  # fmt: skip
def test_only_a_literal_loopback_address_counts_as_loopback(address: str, loopback: bool) -> None:
    assert tls.is_loopback(address) is loopback


@pytest.mark.parametrize("server", ["localhost50051", "127.0.0.1", "grpc://127.0.0.1", "h:port"])
def test_a_server_without_a_port_is_named_as_such_not_refused_as_plaintext(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--server localhost50051` (the colon left out) was refused as plaintext "to
    localhost50051 (not a loopback address)", pointing at --ca-cert and TLS."""
    code = main(["project", "show", "p", "--token", "t", "--server", server])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "expected HOST:PORT, e.g. 127.0.0.1:50051" in err and "plaintext" not in err, err
    assert tls.client_target("unix:/run/bm.sock") == ("unix:/run/bm.sock", False)


def test_tls_files_that_are_not_pem_are_named_not_blamed_on_the_port(
    certs: CertFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is no certificate or key at all (or a key under a passphrase) was taken
    as one: `serve` then said `--listen ...: could not listen on ... (is the port taken
    ...?)`, and a client `cannot reach the matcher` (exit 4). A key that is not its
    certificate's, and a certificate given for a key, are the cases below this one's."""
    from cryptography.hazmat.primitives import serialization

    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)))
    locked = tmp_path / "locked.key"
    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), password=None)
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase"),
    ))  # fmt: skip
    data = ["--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"]
    cases = [
        (["serve", *data, "--tls-cert", str(junk), "--tls-key", str(certs.server_key)],
         f"--tls-cert {junk}: holds no PEM certificate"),
        (["serve", *data, "--tls-cert", str(certs.server_cert), "--tls-key", str(junk)],
         f"--tls-key {junk}: not a PEM private key"),
        (["serve", *data, "--tls-cert", str(certs.server_cert), "--tls-key", str(locked)],
         f"--tls-key {locked}: the key is encrypted; give it without a passphrase"),
        (["run", "--project", "p", "--token", "t", "--ca-cert", str(junk)],
         f"--ca-cert {junk}: holds no PEM certificate"),
    ]  # fmt: skip
    for argv, said in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "--listen" not in err, err
    assert not (tmp_path / "data").exists()
    # The pair `certs` made is taken (the fixtures' servers start with it).
    assert tls.server_credentials(cert=str(certs.server_cert), key=str(certs.server_key),
                                  client_ca=str(certs.ca_cert)) is not None  # fmt: skip


def test_a_grpcs_server_uses_the_system_trust_store(
    tls_server: RunningServer, certs: CertFiles, tmp_path: Path
) -> None:
    target = f"grpcs://localhost:{tls_server.port}"
    # The throwaway CA is in no system store: TLS is tried, and the certificate refused.
    with MatcherClient(target, ADMIN_TOKEN, timeout=5) as op, pytest.raises(UnavailableError):
        op.create_project("nope", ["a", "b"])
    # A system store that holds the CA (gRPC's own variable for it): the same call works.
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "project", "create", "yes", "--members", "a,b",
         "--json", "--server", target],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN,
             "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs.ca_cert)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["project"] == "yes"


# -- TLS files that are not what their flag says (2026-12-07, newops) -------------------------


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"--tls-key": "client_key"}, "--tls-key {client_key} is not the key of --tls-cert"),
        ({"--tls-cert": "server_key"}, "--tls-cert {server_key}: holds no PEM certificate"),
        ({"--tls-key": "server_cert"}, "--tls-key {server_cert}: not a PEM private key"),
        ({"--client-ca": "ca_key"}, "--client-ca {ca_key}: holds no PEM certificate"),
    ],
)
def test_serve_names_a_tls_file_that_is_not_what_its_flag_says(
    tmp_path: Path, certs: CertFiles, given: dict[str, str], said: str
) -> None:
    """Each was `could not listen on 127.0.0.1:0 (is the port taken, ...?)` after gRPC's own
    log lines, and the data dir was made first."""
    files = {"--tls-cert": "server_cert", "--tls-key": "server_key", "--client-ca": "ca_cert"}
    files.update(given)
    paths = {name: str(getattr(certs, name)) for name in files.values()}
    flags = [part for flag, name in files.items() for part in (flag, paths[name])]
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0", *flags],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert said.format(**paths) in done.stderr
    assert "could not listen" not in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"--client-key": "server_key"}, "--client-key {server_key} is not the key of"),
        ({"--ca-cert": "ca_key"}, "--ca-cert {ca_key}: holds no PEM certificate"),
    ],
)
def test_a_client_names_a_tls_file_that_is_not_what_its_flag_says(
    mtls_server: RunningServer,
    certs: CertFiles,
    capsys: pytest.CaptureFixture[str],
    given: dict[str, str],
    said: str,
) -> None:
    """Each was `cannot reach the matcher ... Failed to create security handshaker ...; if
    the matcher uses TLS, pass --ca-cert`, exit 4, though --ca-cert was given (newops)."""
    files = {"--ca-cert": "ca_cert", "--client-cert": "client_cert", "--client-key": "client_key"}
    files.update(given)
    paths = {name: str(getattr(certs, name)) for name in files.values()}
    flags = [part for flag, name in files.items() for part in (flag, paths[name])]
    code = main(["project", "show", "p", "--token", "t", "--server",
                 f"localhost:{mtls_server.port}", *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert said.format(**paths) in err
    assert "cannot reach" not in err


@pytest.mark.parametrize(
    ("mutual", "want"),
    [(False, " with TLS (data: "), (True, " with TLS, client certificates required (data: ")],
)
def test_serve_says_it_listens_with_tls(
    tmp_path: Path, certs: CertFiles, mutual: bool, want: str
) -> None:
    """Its one line said the address and the data dir alone: an operator could not see from
    it that TLS (or mutual TLS) was on (newops, 2026-12-07)."""
    tls_flags = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    if mutual:
        tls_flags += ["--client-ca", str(certs.ca_cert)]
    argv = ["serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", *tls_flags]
    with cli_server(argv, {**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN}) as said:
        assert re.search(r"listening on 127\.0\.0\.1:\d+" + re.escape(want), said[-1]), said[-1]
