"""What `admin check` says of erasures and expiries cut short, and what the next start does.

Each state is the one a matcher stopped part-way leaves, made through the matcher's own steps
run in part (tests/test_erasure_crash.py kills a real process for the worst of them): an
erasure whose data went but which was never recorded complete; one that failed part-way and
after which the member put a new index (its index since, not a leftover); an expiry whose
standing indexes were never deleted.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from blindmatch.client import MatcherClient
from blindmatch.matcher.realtime.twoforget import RETRY_WAITS
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import ADMIN_TOKEN, db_rows, short_check_grace

pytestmark = [pytest.mark.server, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)

CLKS = population(1, 30, 0.0, seed=18)[0].clks


def puts(start: int, n: int) -> list[tuple[str, bytes]]:
    return [(f"r{i}", CLKS[i].tobytes()) for i in range(start, start + n)]


class Later:
    """The real time, moved forward by hand (projects expire by it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def serve(data_dir: Path, clock: Later | None = None, retry_waits: tuple[float, ...] = RETRY_WAITS
          ) -> RunningServer:  # fmt: skip
    return create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, clock=clock or Later(),
                         retry_waits=retry_waits)  # fmt: skip


def completed(data_dir: Path) -> list[tuple[str, str, dict]]:
    return [(r[4], r[5], json.loads(r[8])) for r in db_rows(data_dir, "audit")
            if r[3] == "erase.complete"]  # fmt: skip


def index_of(server: RunningServer, token: str) -> dict[str, bytes]:
    with MatcherClient(f"127.0.0.1:{server.port}", token) as member:
        return member.list_index("p")


def started_with_north_indexed(
    data_dir: Path, clock: Later | None = None, retry_waits: tuple[float, ...] = RETRY_WAITS
) -> tuple[RunningServer, dict[str, str]]:
    server = serve(data_dir, clock, retry_waits)
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, ADMIN_TOKEN) as op:
        tokens = op.create_project("p", ["north", "south"], expires_unix=int(time.time() + 3600)
                                   ).tokens  # fmt: skip
    with MatcherClient(target, tokens["north"]) as north:
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts(0, 10))
    return server, tokens


def test_an_erasure_whose_data_went_but_never_recorded_complete_is_a_repair(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    server, _ = started_with_north_indexed(data_dir)
    try:  # every step of the erasure but the last: its intent forgotten
        server.store.erase_member("p", "north")
        server.realtime.erase_member("p", "north")
    finally:
        server.stop(grace=None)
    report = check_data_dir(data_dir)
    assert report.problems == []
    (repair,) = [r for r in report.repairs if "p/north" in r]
    assert "not recorded complete" in repair
    serve(data_dir).stop(grace=None)
    assert [(p, m, d["index_records"], d["upload_files"]) for p, m, d in completed(data_dir)] == [
        ("p", "north", 0, 0)
    ]
    assert not [r for r in check_data_dir(data_dir).repairs if "p/north" in r]


def test_an_index_put_after_an_erasure_that_failed_part_way_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:
        server.store.erase_member("p", "north")  # its index never deleted (a failure, say)
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=puts(0, 10) + puts(20, 5))  # fmt: skip
    finally:
        server.stop(grace=None)
    report = check_data_dir(data_dir)
    assert report.problems == []  # the index is its change after the erasure, not a leftover
    server = serve(data_dir)
    try:
        assert len(index_of(server, tokens["north"])) == 15
    finally:
        server.stop(grace=None)
    assert completed(data_dir)[0][2]["index_records"] == 0


def test_an_erasure_asked_again_completes_an_earlier_one_cut_short(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:
        server.store.erase_member("p", "north")  # failed part-way; the member erases again
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as north:
            north.erase("p")
            assert north.list_index("p") == {}
    finally:
        server.stop(grace=None)
    report = check_data_dir(data_dir)
    assert report.problems == [] and not [r for r in report.repairs if "p/north" in r]


def test_an_expiry_whose_indexes_were_never_deleted_is_a_problem_until_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_check_grace(monkeypatch)  # (the matcher stopped: nothing in progress to wait for)
    data_dir, clock = tmp_path / "data", Later()
    server, _ = started_with_north_indexed(data_dir, clock)
    try:
        clock.offset = 7200
        assert server.store.expire_projects() == ["p"]  # and none of its hooks
    finally:
        server.stop(grace=None)
    (problem,) = check_data_dir(data_dir).problems
    assert problem.startswith("project p expired, but index.sqlite still holds")
    assert "(10 records)" in problem and "start the matcher to complete the expiry" in problem
    serve(data_dir, clock).stop(grace=None)
    assert [(p, m, d["index_records"]) for p, m, d in completed(data_dir)] == [("p", "", 10)]
    assert check_data_dir(data_dir).problems == []


def test_the_check_beside_a_member_erasing_in_a_loop_reports_nothing(tmp_path: Path) -> None:
    """An erasure in progress looks cut short for a moment: never reported as a problem."""
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    stop, erasures = threading.Event(), [0]

    def churn() -> None:
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as north:
            while not stop.is_set():
                north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   puts=puts(0, 30))  # fmt: skip
                north.erase("p")
                erasures[0] += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        reports = []
        while len(reports) < 12 or erasures[0] < 20:  # (each check a moment of the loop)
            reports.append(check_data_dir(data_dir))
            assert len(reports) < 500 and thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=60)
        server.stop(grace=None)
    assert [p for r in reports for p in r.problems] == []
