"""A CLK run on the Dask executor ended mid-compare (`admin end-project` while its tasks are on
the cluster: fuzzend's RunEnded, tests/test_endrun.py, with `serve --executor dask`): the run
stops, nothing of it is stored, the cluster is left holding none of its tasks or scattered
slices (the futures it had submitted released, the tasks not yet run never run), and the next
run on the same cluster finishes. The run is held at its first write of a task's result, so
that tasks are in flight when the project ends.

A real in-process Dask cluster (a LocalCluster with `processes=False` on loopback tcp://), a
real matcher on loopback, real SQLite files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.knownclks import population, write
from blindmatch.matcher.core.cluster import DaskExecutor, DaskSettings
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.store import Store
from tests.support import ADMIN_TOKEN, Matcher
from tests.test_endrun import NOTHING, ended_in_compare, kept_of, next_run_finishes

pytestmark = pytest.mark.server


class HeldAtAResult:
    """A matcher's `store.update_run`, its first write of a compare result (work done > 0)
    held until `release` is set (`comparing` set meanwhile), as tests/test_endrun.py's `Held`
    holds the stage's first write; every write of that run from then on in `after`."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = store.update_run
        self.comparing, self.release = threading.Event(), threading.Event()
        self.run_id = ""
        self.after: list[tuple[dict[str, object], bool]] = []
        monkeypatch.setattr(store, "update_run", self)

    def __call__(self, run_id: str, **fields: Any) -> bool:
        if (
            not self.comparing.is_set()
            and fields.get("stage") == "compare"
            and int(fields.get("work_done", 0) or 0) > 0
        ):
            self.run_id = run_id
            self.comparing.set()
            assert self.release.wait(120)
        done = self.real(run_id, **fields)
        if run_id == self.run_id:
            self.after.append((fields, done))
        return done


@pytest.fixture
def local_cluster() -> Iterator[Any]:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        yield cluster


def held_by_the_cluster(cluster: Any) -> list[str]:
    """The run's keys the scheduler still holds (its compare tasks, plan, scattered slices)."""
    return sorted(
        str(key) for key in list(cluster.scheduler.tasks)
        if not str(key).startswith("blindmatch-check")
    )  # fmt: skip


def test_a_dask_run_ended_mid_compare_frees_its_tasks_and_stores_nothing(
    local_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small tasks: dozens of them, up to 8 in flight when the first result is written.
    settings = DaskSettings(local_cluster.scheduler_address, "scatter", task_comparisons=2000)
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2,
                           executor=DaskExecutor(settings))  # fmt: skip
    matcher = Matcher(server, data_dir, ADMIN_TOKEN)
    try:
        with matcher.operator() as op:
            tokens = op.create_project("pact", ["north", "south"], mode="clk").tokens
        for member, ds in zip(("north", "south"), population(2, 300, 0.3, seed=2), strict=True):
            with matcher.member(tokens[member]) as client:
                client.upload("pact", write(ds, tmp_path / f"{member}.encoded"))
        hold = HeldAtAResult(matcher.server.store, monkeypatch)
        seen: list[list[str]] = []
        held_at = hold.comparing.wait

        def comparing(timeout: float) -> bool:  # (as the project is ended: what it holds)
            found = held_at(timeout)
            seen.append(held_by_the_cluster(local_cluster))
            return found

        hold.comparing.wait = comparing  # type: ignore[method-assign]
        ended_in_compare(matcher.target, "pact", tokens, hold)  # type: ignore[arg-type]
        assert any(k.startswith("blindmatch-compare-") for k in seen[0]), seen
        # The cluster lets go of everything the ended run sent it (waited for: the
        # scheduler forgets a released key as its worker reports the task done).
        deadline = time.monotonic() + 60
        while held_by_the_cluster(local_cluster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held_by_the_cluster(local_cluster) == []
        next_run_finishes(matcher.target, tmp_path)
    finally:
        server.stop(grace=None)
    # The held write found the run gone, and the run wrote nothing after it.
    assert [(f["stage"], done) for f, done in hold.after] == [("compare", False)]
    assert kept_of(data_dir, "pact") == NOTHING
