"""`blindmatch serve` itself, as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.cliflow import ROOT, blindmatch, serve
from tests.conftest import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, STRONG_SECRET


def test_serve_answers_health_checks_and_stops_on_sigterm(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served:
        with grpc.insecure_channel(served.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0


def test_serve_refuses_plaintext_on_a_network_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch.client.cli", "serve", "--data-dir", str(tmp_path / "d"),
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
