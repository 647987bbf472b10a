"""Batch runs on a real Dask cluster: a scheduler and workers as separate processes on loopback,
speaking TLS with certificates from `blindmatch certs --dask`.

The same project, run on the cluster and on the matcher's own threads, gives the same hits
files; so does a run that loses a worker, or the matcher itself, half way through.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, RunProgress
from blindmatch.client.tools.certs import make_dask_certs
from blindmatch.client.tools.synthetic import write_org_exports
from blindmatch.matcher.core import blocking
from blindmatch.matcher.core import cluster as cluster_
from blindmatch.matcher.core.cluster import ClusterError, DaskExecutor, DaskSettings
from blindmatch.matcher.core.compare import merge
from blindmatch.matcher.core.executor import ClkFile, CompareJob, Executor, ThreadExecutor
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN, PERSON_SCHEMA, ROOT

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

    def add_worker(self) -> subprocess.Popen[bytes]:
        with open(self.root / f"worker-{len(self.workers)}.log", "wb") as log:
            proc = subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--host",
                 "127.0.0.1", "--no-dashboard", *self.tls("worker")],
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
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
            _stop(proc)


@dataclass
class Members:
    encoded: dict[str, Path]
    secret: Path


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Members:
    """Three organisations' synthetic exports (~350 records each), encoded with the CLI."""
    root = tmp_path_factory.mktemp("members")
    exports = write_org_exports(root / "exports", 1000, seed=11)
    secret = root / "linkage.secret"
    secret.write_text(secrets.token_hex(32))
    encoded = {}
    for org, (csv_path, map_path, _truth) in exports.items():
        encoded[org] = root / f"{org}.encoded"
        assert main(["encode", str(csv_path), "--schema", str(PERSON_SCHEMA), "--secret-file",
                     str(secret), "--mapping", str(map_path), "--out", str(encoded[org]),
                     "--quiet"]) == 0  # fmt: skip
    return Members(encoded, secret)


@dataclass
class Served:
    target: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serve(data_dir: Path, log: Path, *extra: str) -> Iterator[Served]:
    """`blindmatch serve` as its own process (stderr to `log`), stopped afterwards."""
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (m := re.search(r"listening on [\d.]+:(\d+)", log.read_text()[start:])):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "blindmatch serve did not start"
        time.sleep(0.1)
    try:
        yield Served(f"127.0.0.1:{m.group(1)}", proc, log)
    finally:
        _stop(proc)


FIRST = "north-police"


@contextmanager
def in_process(data_dir: Path, executor: DaskExecutor | None = None) -> Iterator[str]:
    """A matcher in this process (its own threads, or `executor`); yields its address."""
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, executor=executor)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(grace=None)


def run(target: str, tokens: dict[str, str]) -> int:
    """`blindmatch run`'s exit status."""
    return main(["run", "--project", "crime", "--token", tokens[FIRST], "--server", target,
                 "--quiet"])  # fmt: skip


def create(target: str, members: Members) -> dict[str, str]:
    with MatcherClient(target, ADMIN_TOKEN) as op:
        return op.create_project("crime", list(members.encoded)).tokens


def upload_all(target: str, tokens: dict[str, str], members: Members) -> None:
    for org, path in members.encoded.items():
        assert main(["upload", str(path), "--project", "crime", "--token", tokens[org],
                     "--server", target, "--quiet"]) == 0  # fmt: skip


def hits(target: str, tokens: dict[str, str], members: Members, out: Path) -> dict[str, str]:
    """Every member's hits file, as text."""
    out.mkdir(exist_ok=True)
    found = {}
    for org, path in members.encoded.items():
        csv_path = out / f"{org}-hits.csv"
        assert main(["results", "--project", "crime", "--token", tokens[org], "--encoded",
                     str(path), "--out", str(csv_path), "--server", target]) == 0  # fmt: skip
        found[org] = csv_path.read_text()
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, members: Members) -> dict[str, str]:
    """The hits files of the project run on the matcher's own threads."""
    root = tmp_path_factory.mktemp("reference")
    with in_process(root / "data") as target:
        tokens = create(target, members)
        upload_all(target, tokens, members)
        assert run(target, tokens) == 0
        found = hits(target, tokens, members, root / "hits")
    assert sum(text.count("\n") - 1 for text in found.values()) > 50  # there are hits to compare
    return found


def watch(target: str, token: str, until: int = 0) -> Iterator[RunProgress]:
    """The latest run's progress; with `until`, stops once that many tasks are done."""
    with MatcherClient(target, token) as member:
        for status in member.watch_run("crime"):
            yield status
            if until and status.tasks_done >= until:
                return


def test_a_cluster_run_gives_the_hits_of_an_in_process_run(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    with serve(tmp_path / "data", tmp_path / "serve.log", *cluster.serve_options(),
               "--dask-task-comparisons", TINY_TASKS) as served:  # fmt: skip
        tokens = create(served.target, members)
        upload_all(served.target, tokens, members)
        assert run(served.target, tokens) == 0
        final = list(watch(served.target, tokens[FIRST]))[-1]
        assert hits(served.target, tokens, members, tmp_path / "hits") == reference
    assert final.state == "done"
    assert final.tasks_total > 10 and final.tasks_done == final.tasks_total
    log = (tmp_path / "serve.log").read_text()
    assert f"batch runs compare on the Dask cluster at {cluster.address} (TLS)" in log
    assert re.search(r"comparison tasks to the Dask cluster .* dashboard: http://", log)


def test_a_worker_killed_mid_run_changes_no_hit(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    doomed = cluster.add_worker()
    cluster.wait_for_workers(3)
    with serve(tmp_path / "data", tmp_path / "serve.log", *cluster.serve_options(),
               "--dask-task-comparisons", "1000") as served:  # fmt: skip
        tokens = create(served.target, members)
        upload_all(served.target, tokens, members)
        with MatcherClient(served.target, tokens[FIRST]) as member:
            member.start_run("crime")
        at_kill = list(watch(served.target, tokens[FIRST], until=20))[-1]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        cluster.workers.remove(doomed)
        final = list(watch(served.target, tokens[FIRST]))[-1]
        assert final.state == "done", final.message
        assert hits(served.target, tokens, members, tmp_path / "hits") == reference
    assert at_kill.state == "running" and at_kill.tasks_done < at_kill.tasks_total
    cluster.wait_for_workers(2)  # the scheduler saw it go


def test_a_matcher_restarted_mid_run_resumes_it_on_the_cluster(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    options = [*cluster.serve_options(), "--dask-task-comparisons", "1000"]
    with serve(tmp_path / "data", tmp_path / "serve.log", *options) as served:
        tokens = create(served.target, members)
        upload_all(served.target, tokens, members)
        with MatcherClient(served.target, tokens[FIRST]) as member:
            member.start_run("crime")
        at_kill = list(watch(served.target, tokens[FIRST], until=10))[-1]
        served.process.kill()
        served.process.wait(timeout=10)
    with serve(tmp_path / "data", tmp_path / "serve.log", *options) as served:
        final = list(watch(served.target, tokens[FIRST]))[-1]
        assert hits(served.target, tokens, members, tmp_path / "hits") == reference
    assert at_kill.tasks_done < at_kill.tasks_total
    assert final.state == "done" and final.run_id == at_kill.run_id
    assert "resuming interrupted run" in (tmp_path / "serve.log").read_text()


def test_an_unreachable_scheduler_fails_the_run_clearly_and_a_later_run_succeeds(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    gone = DaskSettings("tcp://127.0.0.1:9", "scatter", connect_timeout=2)
    with in_process(tmp_path / "data", DaskExecutor(gone)) as target:
        tokens = create(target, members)
        upload_all(target, tokens, members)
        assert run(target, tokens) == 1
        failed = list(watch(target, tokens[FIRST]))[-1]
    assert failed.state == "failed"
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in failed.message
    assert "start it again" in failed.message
    # The uploads were kept: the same data dir, with the cluster back, runs to the same hits.
    here = DaskExecutor(cluster.settings(str(tmp_path / "data" / "clks")))
    with in_process(tmp_path / "data", here) as target:
        assert run(target, tokens) == 0
        assert hits(target, tokens, members, tmp_path / "hits") == reference


# -- the executor itself: the same candidates, pair for pair and score for score ------------


def _job(tmp_path: Path, method: str, columns: int | None = None) -> CompareJob:
    """Three members' CLKs in upload files: 1,200 random 1024-bit CLKs, 300 shared, noisy."""
    rng = np.random.default_rng(5)
    people = rng.random((900, 1024)) < 0.35
    datasets, files = [], []
    for i, rows in enumerate((people[:400], people[300:700], np.r_[people[600:], people[:100]])):
        noisy = rows ^ (rng.random(rows.shape) < 0.03)
        clks = np.packbits(noisy, axis=1)
        (tmp_path / f"u{i}.bin").write_bytes(clks.tobytes())
        files.append(ClkFile(f"u{i}", len(clks), 128, hashlib.sha256(clks.tobytes()).hexdigest()))
        datasets.append(clks if columns is None else np.ascontiguousarray(clks[:, :columns]))
    # Planned as for 200k rows a member: at 400 rows comparing every pair is cheaper.
    lsh: blocking.LshPlan | blocking.PairPlans | blocking.NoPlan | None = None
    if method == "lsh":
        lsh = blocking.plan(datasets, 0.75, sizes=[200_000] * 3)
    elif method == "pairs":
        # A plan per shape of pair, as for members of 1M, 100k and 5k: two plans, and the
        # 5k member compared with the 100k one exhaustively.
        lsh = blocking.plan_pairs(datasets, 0.75, sizes=[1_000_000, 100_000, 5_000])
        assert isinstance(lsh, blocking.PairPlans)
        assert len(lsh.plans) == 2 and set(lsh.exhaustive) == {(1, 2)}
        method = "lsh"
    assert not isinstance(lsh, blocking.NoPlan)
    return CompareJob(datasets, 0.75, method, columns=columns, files=files, lsh=lsh)


def _candidates(
    executor: Executor, job: CompareJob, tasks: Callable[[int, int], None] = lambda *a: None
) -> tuple[object, ...]:
    parts, comparisons = executor.compare(job, lambda *a: None, tasks)
    c = merge(parts)
    return (comparisons, c.sims.tolist(), c.dset0.tolist(), c.dset1.tolist(), c.rec0.tolist(),
            c.rec1.tolist())  # fmt: skip


@pytest.mark.parametrize(
    ("method", "columns", "clks"),
    [
        ("exhaustive", None, "files"),
        ("lsh", None, "files"),
        ("exhaustive", 64, "scatter"),
        ("lsh", 64, "scatter"),
        ("pairs", None, "files"),
    ],
)
def test_the_cluster_finds_the_candidates_the_threads_find(
    cluster: Cluster, tmp_path: Path, method: str, columns: int | None, clks: str
) -> None:
    job = _job(tmp_path, method, columns)
    mine = _candidates(ThreadExecutor(2), job)
    totals: list[int] = []
    theirs = _candidates(
        DaskExecutor(cluster.settings(str(tmp_path) if clks == "files" else "scatter", 50_000)),
        job,
        lambda done, total: totals.append(total),
    )
    assert len(mine[1]) > 250  # type: ignore[arg-type]
    assert theirs == mine
    if isinstance(job.lsh, blocking.LshPlan):
        # Small tasks (50,000 comparisons) still take 16 bands each: one native key pass.
        assert totals[-1] == 3 * math.ceil(job.lsh.bands / 16) < 3 * job.lsh.bands


def test_a_stale_copy_of_the_upload_files_fails_the_run(cluster: Cluster, tmp_path: Path) -> None:
    job = _job(tmp_path, "exhaustive")
    (tmp_path / "u1.bin").write_bytes(b"\0" * 128 * 400)
    with pytest.raises(ClusterError, match=r"u1\.bin on the workers' storage differs"):
        _candidates(DaskExecutor(cluster.settings(str(tmp_path))), job)
    (tmp_path / "u2.bin").unlink()
    with pytest.raises(ClusterError, match=r"a Dask worker cannot read .*u2\.bin"):
        _candidates(DaskExecutor(cluster.settings(str(tmp_path))), job)


# -- who the matcher will talk to -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "secure", "allow", "refusal"),
    [
        ("tcp://10.1.2.3:8786", False, False, "refusing a plaintext Dask scheduler"),
        ("scheduler.internal:8786", False, False, "refusing a plaintext Dask scheduler"),
        ("tls://10.1.2.3:8786", False, False, "needs the matcher's cluster certificate"),
        ("tcp://10.1.2.3:8786", True, False, "write it as tls://"),
        ("udp://10.1.2.3:8786", False, True, "unknown scheme"),
        ("tcp://10.1.2.3:8786", False, True, ""),
        ("tcp://127.0.0.1:8786", False, False, ""),
        ("tcp://[::1]:8786", False, False, ""),
        ("localhost:8786", False, False, ""),
        ("tls://10.1.2.3:8786", True, False, ""),
    ],
)
def test_a_plaintext_scheduler_off_loopback_is_refused_unless_allowed(
    address: str, secure: bool, allow: bool, refusal: str
) -> None:
    if refusal:
        with pytest.raises(ClusterError, match=refusal):
            cluster_.check_scheduler_address(address, secure=secure, allow=allow)
    else:
        cluster_.check_scheduler_address(address, secure=secure, allow=allow)


def test_serve_refuses_a_plaintext_scheduler_on_the_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path / "d"), "--executor", "dask",
                 "--dask-scheduler", "tcp://192.0.2.7:8786"])  # fmt: skip
    assert code == 2
    assert "--dask-insecure" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow  # its own scheduler and workers, as processes
def test_scattered_slices_lost_with_a_worker_are_sent_again_and_a_lost_scheduler_fails_the_run(
    tmp_path: Path,
) -> None:
    """A plaintext loopback cluster of its own: the test kills its scheduler."""
    sched_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=scratch(tmp_path),
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs += [
            subprocess.Popen(
                [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
                env=scratch(tmp_path),
            )
            for _ in range(2)
        ]
        job = _job(tmp_path, "exhaustive")
        executor = DaskExecutor(DaskSettings(address, "scatter", task_comparisons=5_000))
        mine = _candidates(ThreadExecutor(2), job)

        def kill_at_a_quarter(victim: subprocess.Popen[bytes]) -> Callable[[int, int], None]:
            def progress(done: int, total: int) -> None:
                if done >= total // 4 and victim.poll() is None:
                    victim.kill()
                    victim.wait(timeout=10)

            return progress

        assert _candidates(executor, job, kill_at_a_quarter(procs[1])) == mine
        assert procs[1].returncode == -signal.SIGKILL
        with pytest.raises(ClusterError, match=r"lost the Dask scheduler at .* mid-run"):
            _candidates(executor, job, kill_at_a_quarter(procs[0]))
    finally:
        for proc in procs:
            _stop(proc)
