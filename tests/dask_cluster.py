"""The Dask cluster the cluster tests share (tests/test_cluster*.py): a scheduler and two
workers as separate processes on loopback, speaking TLS with certificates from
`blindmatch certs --dask`, their scratch files kept under the test's own folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blindmatch.client.tools.certs import make_dask_certs
from blindmatch.matcher.core.cluster import DaskExecutor, DaskSettings
from tests.support import ROOT

DASK = str(Path(sys.executable).parent / "dask")


def scratch(where: Path) -> dict[str, str]:
    """The environment of a dask scheduler or worker that keeps its scratch files (its
    `dask-scratch-space`) under `where`, the test's own folder, not in the system's /tmp."""
    return {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(where / "dask-scratch")}


TINY_TASKS = "5000"  # comparisons a task: dozens of tasks on a few hundred records


def node_tls(certs: Path, role: str) -> list[str]:
    """A scheduler's or worker's TLS options."""
    return [
        "--tls-ca-file", str(certs / "dask-ca.pem"),
        "--tls-cert", str(certs / f"dask-{role}.pem"),
        "--tls-key", str(certs / f"dask-{role}.key"),
    ]  # fmt: skip


@dataclass
class Cluster:
    root: Path
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    def tls(self, role: str) -> list[str]:
        return node_tls(self.certs, role)

    def serve_options(self) -> list[str]:
        c = self.certs
        return [
            "--executor", "dask", "--dask-scheduler", self.address,
            "--dask-tls-ca", str(c / "dask-ca.pem"),
            "--dask-tls-cert", str(c / "dask-matcher.pem"),
            "--dask-tls-key", str(c / "dask-matcher.key"),
        ]  # fmt: skip

    def settings(self, clks: str, task_comparisons: int = 20_000) -> DaskSettings:
        c = self.certs
        return DaskSettings(
            self.address,
            clks,
            tls_ca=str(c / "dask-ca.pem"),
            tls_cert=str(c / "dask-matcher.pem"),
            tls_key=str(c / "dask-matcher.key"),
            task_comparisons=task_comparisons,
        )

    def add_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """One more worker (`extra`: more `dask worker` options, a `--preload FILE` say)."""
        with open(self.root / f"worker-{len(self.workers)}.log", "wb") as log:
            proc = subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--host",
                 "127.0.0.1", "--no-dashboard", *self.tls("worker"), *extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=scratch(self.root),
            )  # fmt: skip
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        ex = DaskExecutor(self.settings("scatter"))
        with Client(self.address, security=ex.security(), timeout=30) as client:
            client.wait_for_workers(count, timeout=60)
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) != count:
                assert time.monotonic() < deadline, "workers did not come and go as asked"
                time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dask")
    make_dask_certs(root / "certs")
    sched_file = root / "scheduler.json"
    with open(root / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file),
             *node_tls(root / "certs", "scheduler")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=scratch(root),
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not sched_file.exists() or not sched_file.read_text().strip():
        assert scheduler.poll() is None, (root / "scheduler.log").read_text()
        assert time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    found = Cluster(root, address, scheduler)
    try:
        found.add_worker()
        found.add_worker()
        found.wait_for_workers(2)
        yield found
    finally:
        for proc in [*found.workers, scheduler]:
            stop(proc)


__all__ = ["DASK", "TINY_TASKS", "Cluster", "cluster", "scratch", "stop"]
