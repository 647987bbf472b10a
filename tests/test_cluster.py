"""Batch runs on a real Dask cluster: a scheduler and workers as separate processes on loopback,
speaking TLS with certificates from `blindmatch certs --dask` (tests/dask_cluster.py).

The same project, run on the cluster and on the matcher's own threads, gives the same hits
files; so does a run that loses a worker, or the matcher itself, half way through. (The
executor's own candidates: tests/test_cluster_executor.py; which schedulers the matcher
will talk to: tests/test_cluster_config.py.)
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, RunProgress
from blindmatch.client.tools.synthetic import write_org_exports
from blindmatch.matcher.core.cluster import DaskExecutor, DaskSettings
from blindmatch.matcher.server import create_server
from tests import dask_cluster
from tests.dask_cluster import TINY_TASKS, Cluster, stop
from tests.support import ADMIN_TOKEN, PERSON_SCHEMA, ROOT

cluster = dask_cluster.cluster  # the fixture


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
        stop(proc)


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


def watch(target: str, until: int = 0) -> Iterator[RunProgress]:
    """The latest run's progress as the operator sees it (`ListProjects`: a member sees no
    task counts since srvleft), looked at every 50 ms until it ends; with `until`, stops
    once that many tasks are done."""
    with MatcherClient(target, ADMIN_TOKEN) as op:
        while True:
            status = op.list_projects("crime")[0].latest_run
            if status is not None:
                yield status
                if status.state in ("done", "failed") or (until and status.tasks_done >= until):
                    return
            time.sleep(0.05)


def test_a_cluster_run_gives_the_hits_of_an_in_process_run(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    with serve(tmp_path / "data", tmp_path / "serve.log", *cluster.serve_options(),
               "--dask-task-comparisons", TINY_TASKS) as served:  # fmt: skip
        tokens = create(served.target, members)
        upload_all(served.target, tokens, members)
        assert run(served.target, tokens) == 0
        final = list(watch(served.target))[-1]
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
        at_kill = list(watch(served.target, until=20))[-1]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        cluster.workers.remove(doomed)
        final = list(watch(served.target))[-1]
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
        at_kill = list(watch(served.target, until=10))[-1]
        served.process.kill()
        served.process.wait(timeout=10)
    with serve(tmp_path / "data", tmp_path / "serve.log", *options) as served:
        final = list(watch(served.target))[-1]
        assert hits(served.target, tokens, members, tmp_path / "hits") == reference
    assert at_kill.tasks_done < at_kill.tasks_total
    assert final.state == "done" and final.run_id == at_kill.run_id
    assert "resuming interrupted run" in (tmp_path / "serve.log").read_text()


def test_an_unreachable_scheduler_fails_the_run_clearly_and_a_later_run_succeeds(
    cluster: Cluster, members: Members, reference: dict[str, str], tmp_path: Path
) -> None:
    # Nothing listens there: any connect timeout ends in the same refusal (0.5 s, not 2 s).
    gone = DaskSettings("tcp://127.0.0.1:9", "scatter", connect_timeout=0.5)
    with in_process(tmp_path / "data", DaskExecutor(gone)) as target:
        tokens = create(target, members)
        upload_all(target, tokens, members)
        assert run(target, tokens) == 1
        failed = list(watch(target))[-1]
    assert failed.state == "failed"
    # The operator's side, to ask the operator about (its log and audit entry say which
    # scheduler, and why: tests/test_member_failure_words.py).
    assert failed.message.startswith("the run failed on the operator's side"), failed.message
    assert "start it again" in failed.message and "127.0.0.1" not in failed.message
    # The uploads were kept: the same data dir, with the cluster back, runs to the same hits.
    here = DaskExecutor(cluster.settings(str(tmp_path / "data" / "clks")))
    with in_process(tmp_path / "data", here) as target:
        assert run(target, tokens) == 0
        assert hits(target, tokens, members, tmp_path / "hits") == reference
