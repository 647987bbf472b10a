"""`blindmatch serve` itself, as a separate process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.cliflow import ROOT, Served, blindmatch, serve
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from blindmatch.client import MatcherClient
from blindmatch.matcher.server import create_server
from tests.portheld import said_taken, taken_port
from tests.support import (
    ADMIN_TOKEN,
    NORTH_CSV,
    NORTH_MAP,
    PERSON_SCHEMA,
    STRONG_SECRET,
    corrupt_table,
)

pytestmark = [pytest.mark.slow, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)


def serves_then_stops_on_sigterm(served: Served) -> None:
    """`served` answers a health check SERVING, then ends with 0 at SIGTERM."""
    with grpc.insecure_channel(served.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0


def test_serve_answers_health_checks_and_stops_on_sigterm(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served:
        serves_then_stops_on_sigterm(served)


def test_serve_refuses_plaintext_on_a_network_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "x"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing plaintext gRPC on a non-loopback address" in done.stderr
    assert not (tmp_path / "d").exists()


def test_an_acknowledged_upload_survives_sigkill(tmp_path: Path) -> None:
    (tmp_path / "north.csv").write_text(NORTH_CSV, encoding="utf-8")
    (tmp_path / "north.toml").write_text(NORTH_MAP, encoding="utf-8")
    (tmp_path / "secret").write_text(STRONG_SECRET)
    blindmatch(
        "encode", str(tmp_path / "north.csv"), "--schema", str(PERSON_SCHEMA),
        "--secret-file", str(tmp_path / "secret"), "--mapping", str(tmp_path / "north.toml"),
        "--out", str(tmp_path / "north.encoded"), "--quiet",
    )  # fmt: skip
    data = tmp_path / "data"
    with serve(data) as served:
        admin = {"BLINDMATCH_ADMIN_TOKEN": served.admin_token}
        created = blindmatch(
            "project", "create", "p", "--members", "north,south", "--json",
            "--server", served.target, env=admin,
        )  # fmt: skip
        token = json.loads(created)["tokens"]["north"]
        blindmatch(
            "upload", str(tmp_path / "north.encoded"), "--project", "p", "--token", token,
            "--server", served.target,
        )  # fmt: skip
        served.process.kill()  # no chance to flush or clean up
        served.process.wait(timeout=30)
    with serve(data) as served:
        shown = blindmatch("project", "show", "p", "--token", token, "--server", served.target)
    assert "north: 5 records uploaded" in shown
    assert "south: not uploaded" in shown


def test_a_token_serve_makes_goes_to_an_owner_only_file_never_to_the_terminal(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLINDMATCH_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    said = []
    while not said or "blindmatch matcher listening on" not in said[-1]:
        line = proc.stderr.readline()
        assert line, f"serve exited {proc.wait()}: {''.join(said)}"
        said.append(line)
    token_file = tmp_path / "d" / "operator.token"
    token = token_file.read_text().strip()
    assert token.startswith("bm_admin_")
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert f"operator token is in {token_file}" in "".join(said)
    # Without S1 and S2 every project is a CLK one: said once at start, with where to read
    # what that exposes (issue 18); the listening line no longer offers another mode.
    exposed = [line for line in said if "every project this matcher makes is a CLK" in line]
    assert len(exposed) == 1 and "WARNING" in exposed[0] and "docs/privacy.md" in exposed[0]
    assert "new projects: clk mode, the only one without S1 and S2)" in said[-1]
    port = re.search(r"listening on [\d.]+:(\d+)", said[-1]).group(1)  # type: ignore[union-attr]
    created = blindmatch(
        "project", "create", "p", "--members", "a,b", "--json", "--server", f"127.0.0.1:{port}",
        env={"BLINDMATCH_ADMIN_TOKEN": token},
    )  # fmt: skip
    made = json.loads(created)
    assert made["project"] == "p"  # the token in the file is the operator's
    assert made["mode"] == "clk"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert token not in out + err + "".join(said)


# -- refusing to start on a data dir that cannot be served as it is --------------------------


@pytest.fixture
def used_data_dir(tmp_path: Path) -> Path:
    """A stopped matcher's data dir: a project, an upload, a finished run, an index, audit."""
    data = tmp_path / "data"
    server = create_server("127.0.0.1:0", data, ADMIN_TOKEN, scrub_interval=0)
    try:
        target = f"127.0.0.1:{server.port}"
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("p", ["north", "south"]).tokens
        north, south = population(2, 300, 0.5, seed=3)
        for name, ds in (("north", north), ("south", south)):
            with MatcherClient(target, tokens[name]) as member:
                member.upload("p", write(ds, tmp_path / name))
        with MatcherClient(target, tokens["north"]) as member:
            run = member.start_run("p")
            assert list(member.watch_run("p", run.run_id))[-1].state == "done"
            puts = [(f"r{i}", north.clks[i].tobytes()) for i in range(300)]
            member.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    finally:
        server.stop(grace=None)
    return data


def serve_refusal(data: Path) -> str:
    """`blindmatch serve` on `data`, which must refuse to start: its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(data),
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "x"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stderr
    return done.stderr


@pytest.mark.parametrize(("database", "table"), [("blindmatch.sqlite", "links"),
                                                 ("index.sqlite", "index_records")])  # fmt: skip
def test_serve_refuses_a_damaged_database_and_says_how_to_recover(
    used_data_dir: Path, database: str, table: str
) -> None:
    corrupt_table(used_data_dir / database, table)
    err = serve_refusal(used_data_dir)
    assert f"{used_data_dir / database} is damaged" in err
    assert "restore the newest verified backup" in err
    assert "blindmatch admin check" in err


def test_serve_refuses_to_start_without_its_audit_key(used_data_dir: Path) -> None:
    key = used_data_dir / "audit.key"
    key.unlink()
    err = serve_refusal(used_data_dir)
    assert f"the audit key {key} is missing" in err
    assert "restore the key" in err
    assert not key.exists()  # not silently replaced by a new one


# -- --listen on IPv6 loopback (issue 16: `::1:PORT` ended in a traceback) -------------------


@pytest.mark.parametrize("listen", ["[::1]:0", "::1:0"])
def test_serve_listens_on_ipv6_loopback_written_either_way(tmp_path: Path, listen: str) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proc = subprocess.Popen(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", listen],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []
    try:
        while not said or "blindmatch matcher listening on" not in said[-1]:
            line = proc.stderr.readline()
            assert line, f"serve exited {proc.wait()}: {''.join(said)}"
            said.append(line)
        found = re.search(r"listening on \[::1\]:(\d+)", said[-1])
        assert found, said[-1]
        with grpc.insecure_channel(f"[::1]:{found.group(1)}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


@pytest.mark.parametrize(
    ("listen", "said"),
    [("::1", "expected HOST:PORT"), ("[::1:0", "expected HOST:PORT"),
     ("127.0.0.1:99999", "expected HOST:PORT"), ("192.0.2.1:0", "could not listen")],
)  # fmt: skip
def test_serve_refuses_a_listen_address_it_cannot_use_in_one_line(
    tmp_path: Path, listen: str, said: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", listen, "--insecure-listen-on-network"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()  # was: made and initialised, then the bind failed


def _refused_on_a_taken_port(data: Path, *more: str) -> None:
    """`serve` on a port another socket holds: exit 2, the taken port said (and nothing
    else on stderr), no data dir made."""
    with taken_port() as listen:
        done = subprocess.run(
            [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(data), "--listen",
             listen, *more],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == said_taken(listen, "a matcher", data)
    assert not data.exists()


def test_serve_on_a_port_in_use_says_so_and_makes_no_data_dir(tmp_path: Path) -> None:
    """Was: gRPC's own line (`E1207 ... add_port.cc:83] Failed to add port ...`), and a new
    data dir made and initialised (blindmatch.sqlite, index.sqlite, audit.key) before the bind
    failed: a half-made matcher's data dir left behind."""
    data = tmp_path / "new-data"
    _refused_on_a_taken_port(data)


def test_serve_checks_the_port_before_its_tls_files(tmp_path: Path) -> None:
    """`serve`'s checks in order (the merge of newops' TLS check and uxpolish's port probe):
    the port, then the TLS files, then the data dir's lock; a taken port is said first."""
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    data = tmp_path / "new-data"
    _refused_on_a_taken_port(data, "--tls-cert", str(junk), "--tls-key", str(junk))


def test_a_data_dir_that_cannot_be_made_is_named_as_the_data_dir_not_the_listen_address(
    tmp_path: Path,
) -> None:
    """Was: `Error: --listen 127.0.0.1:0: [Errno 36] File name too long: ...` (or `No such
    file or directory`, a data dir under /proc, say)."""
    data = tmp_path / ("x" * 300) / "data"  # a folder name longer than any file system takes
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(data), "--listen",
         "127.0.0.1:0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: --data-dir {data}: "), done.stderr
    assert "--listen" not in done.stderr and "Traceback" not in done.stderr


# -- an operator's mistakes at start (2026-12-07, newops) -------------------------------------


def test_a_second_serve_on_a_data_dir_being_served_is_refused_and_the_first_serves_on(
    tmp_path: Path,
) -> None:
    """Was: it started beside the first (on another port), emptied the first's tmp/ (an
    upload being received) and served the same databases. Now refused, having changed
    nothing, while the first serves on (newuser's and newops' tests, one since the merge)."""
    data = tmp_path / "data"
    with serve(data) as served:
        receiving = data / "tmp" / "an-upload-being-received"
        os.close(os.open(receiving, os.O_WRONLY | os.O_CREAT, 0o600))  # as the matcher's own
        err = serve_refusal(data)
        assert f"--data-dir {data}: another process is serving it" in err
        assert "has changed nothing" in err
        assert receiving.exists()  # tmp/ was not emptied by the refused start
        serves_then_stops_on_sigterm(served)
    with serve(data):  # stopped, it let go of the data dir: the next start serves it
        pass


def test_serve_given_its_token_deletes_the_token_file_an_earlier_run_made(tmp_path: Path) -> None:
    """DATA_DIR/operator.token from a run without BLINDMATCH_ADMIN_TOKEN held a token the next
    run, given one, refuses; it stayed there, for an operator to export the wrong one."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    stale = data / "operator.token"
    stale.write_text("bm_admin_an_earlier_runs\n")
    stale.chmod(0o600)
    with serve(data) as served:
        assert not stale.exists()
        env = {"BLINDMATCH_ADMIN_TOKEN": served.admin_token}
        blindmatch("project", "list", "--server", served.target, env=env)


def test_serve_names_a_file_it_cannot_make_not_the_listen_address(tmp_path: Path) -> None:
    """`--audit-key` in a folder that is not there was `Error: --listen 127.0.0.1:0: [Errno
    2] No such file or directory: ...`: the port blamed for a file."""
    key = tmp_path / "no-such-folder" / "audit.key"
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0", "--audit-key", str(key)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "x"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"Error: {key}: No such file or directory" in done.stderr
    assert "--listen" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()  # made for this start: gone with it (the merge)
