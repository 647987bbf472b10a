"""The Dask executor itself, on a real cluster (tests/dask_cluster.py): the same candidates as
the matcher's threads, pair for pair and score for score; a stale copy of the upload files
refused; a worker running another blindmatch refused; slices lost with a worker sent again,
and a lost scheduler failing the run."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.cluster import ClusterError, DaskExecutor, DaskSettings, compare_remote
from blindmatch.matcher.core.clusterbuild import build
from blindmatch.matcher.core.compare import Chunk, merge
from blindmatch.matcher.core.executor import ClkFile, CompareJob, Executor, ThreadExecutor
from blindmatch.matcher.core.tasks import DenseTask
from tests import dask_cluster
from tests.dask_cluster import DASK, Cluster, scratch, stop
from tests.support import ROOT

cluster = dask_cluster.cluster  # the fixture


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


# A worker's preload: its blindmatch compares with a threshold a little above the one asked
# (a worker left on an older kernel, say). Its answers differ; its version does not.
# (Dask runs a preload file more than once: it patches the kernel once.)
OTHER_KERNEL = """
from blindmatch.matcher.core import tasks

if not hasattr(tasks, "older"):
    tasks.older = tasks.compare_slices
    tasks.compare_slices = lambda chunk, a, b, threshold: tasks.older(chunk, a, b, threshold + 0.05)
"""


def test_a_worker_running_another_blindmatch_fails_the_run_naming_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    from distributed import Client

    job = _job(tmp_path, "exhaustive")
    executor = DaskExecutor(cluster.settings(str(tmp_path)))
    preload = tmp_path / "other_kernel.py"
    preload.write_text(OTHER_KERNEL)
    other = cluster.add_worker("--preload", str(preload))
    try:
        cluster.wait_for_workers(3)
        # Before: the run went on, the tasks that worker took answering by its own rule.
        with pytest.raises(
            ClusterError,
            match=r"^1 of the 3 Dask workers runs another blindmatch than the matcher "
            r"\(blindmatch .*\): tls://127\.0\.0\.1:\d+: blindmatch [^;]*, answers [0-9a-f]+; "
            r"their comparisons could differ; install the matcher's blindmatch .* on every "
            r"worker .*nothing was stored$",
        ):
            _candidates(executor, job)
        # A worker that joins once the run has checked them refuses each task it is given.
        with Client(cluster.address, security=executor.security(), timeout=30) as client:
            (address,) = (a for a, b in client.run(build).items() if b != build())
            task = DenseTask(Chunk(0, 0, 4, 1, 0, 4))
            clks = job.datasets[0][:4]
            sent = client.submit(
                compare_remote, task, clks, clks, 0.75, None, build(), workers=[address]
            )
            with pytest.raises(ClusterError, match=f"^the Dask worker at {address} runs another"):
                sent.result(timeout=60)
    finally:
        stop(other)
        cluster.workers.remove(other)
        cluster.wait_for_workers(2)


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
            stop(proc)
