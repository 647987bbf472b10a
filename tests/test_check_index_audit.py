"""`blindmatch admin check` cross-checks the standing indexes (`index.sqlite`) against the
audit log (docs/operations.md "Checking a data dir"). A data dir whose two databases were
copied one after the other, as `admin backup` did before it read them together, with an
index change between the two copies, is reported, naming the member and the change; one
whose last change was announced and not stored is a repair (start-up voids it); a healthy
data dir passes, beside a member changing its index too."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.backup import snapshot
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import ADMIN_TOKEN, Matcher

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)

CLKS = population(1, 400, 0.0, seed=7)[0].clks


@pytest.fixture
def project(matcher: Matcher) -> ProjectTokens:
    with matcher.operator() as op:
        return op.create_project("region", ["north", "south"])


def change(matcher: Matcher, project: ProjectTokens, change_id: str, first: int, n: int) -> None:
    """north puts records r<first> .. r<first+n-1>, under retry id `change_id`."""
    puts = [(f"r{i}", CLKS[i].tobytes()) for i in range(first, first + n)]
    with matcher.member(project.tokens["north"]) as north:
        north.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts,
                           change_id=change_id)  # fmt: skip


def copied_apart(source: Path, dest: Path, first: str, between: Callable[[], None]) -> Path:
    """A copy of a serving data dir whose two databases were snapshotted one after the
    other (`first`: "db" or "index"), `between` running between the two; its key beside."""
    src, out = DataDir(source), DataDir(dest)
    out.make()
    order = [(src.db, out.db), (src.index_db, out.index_db)]
    if first == "index":
        order.reverse()
    snapshot(*order[0])
    between()
    snapshot(*order[1])
    shutil.copytree(src.clks, out.clks, dirs_exist_ok=True)
    shutil.copy(src.audit_key, out.audit_key)
    return dest


def test_an_index_copied_after_its_database_holds_a_change_the_log_lacks(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change(matcher, project, "first", 0, 10)
    copy = copied_apart(matcher.data_dir, tmp_path / "copy", "db",
                        lambda: change(matcher, project, "late", 10, 5))  # fmt: skip
    report = check_data_dir(copy)
    assert not report.ok
    assert any("'late' of region/north" in p and "no audit entry" in p for p in report.problems)
    assert main(["admin", "check", "--data-dir", str(copy)]) == 1
    assert "'late' of region/north" in capsys.readouterr().err

    # Served, the copy's next entries reuse the seq 'late' was stored with: still reported.
    server = create_server("127.0.0.1:0", copy, ADMIN_TOKEN)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", project.tokens["south"]) as south:
            south.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=[("s0", CLKS[0].tobytes())])  # fmt: skip
    finally:
        server.stop(grace=None)
    again = check_data_dir(copy)
    assert any("'late' of region/north" in p for p in again.problems), again.render()


def test_an_index_copied_before_its_database_lacks_a_change_the_log_says_was_done(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path
) -> None:
    change(matcher, project, "first", 0, 10)

    def two_changes() -> None:  # the second's announcement settles the first
        change(matcher, project, "settled", 10, 5)
        change(matcher, project, "unsettled", 15, 5)

    report = check_data_dir(copied_apart(matcher.data_dir, tmp_path / "copy", "index",
                                         two_changes))  # fmt: skip
    assert [p for p in report.problems if "'settled' of region/north" in p], report.render()
    assert not [p for p in report.problems if "unsettled" in p]
    assert [r for r in report.repairs if "unsettled of region/north" in r]


def test_a_last_change_announced_and_not_stored_is_a_repair_not_a_problem(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path
) -> None:
    change(matcher, project, "first", 0, 10)
    copy = copied_apart(matcher.data_dir, tmp_path / "copy", "index",
                        lambda: change(matcher, project, "cut", 10, 5))  # fmt: skip
    report = check_data_dir(copy)
    assert report.ok, report.render()
    assert [r for r in report.repairs if "cut of region/north" in r]
    server = create_server("127.0.0.1:0", copy, ADMIN_TOKEN)  # start-up voids it
    server.stop(grace=None)
    after = check_data_dir(copy)
    assert after.ok and after.repairs == [], after.render()


def test_a_healthy_data_dir_passes_beside_a_member_changing_its_index(
    matcher: Matcher, project: ProjectTokens
) -> None:
    stop, changes = threading.Event(), [0]

    def churn() -> None:  # each change adds 3 records and removes 1
        with matcher.member(project.tokens["north"]) as north:
            while not stop.is_set():
                k = changes[0]
                puts = [(f"r{3 * k + i}", CLKS[(3 * k + i) % len(CLKS)].tobytes())
                        for i in range(3)]  # fmt: skip
                north.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   puts=puts, removes=[f"r{3 * (k - 1)}"] if k else [])  # fmt: skip
                changes[0] += 1

    thread = threading.Thread(target=churn)
    thread.start()
    reports = []
    try:
        while changes[0] < 1 and thread.is_alive():
            stop.wait(0.01)
        while (len(reports) < 15 or changes[0] < 20) and thread.is_alive():
            reports.append(check_data_dir(matcher.data_dir, hash_files=False))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert changes[0] >= 20  # (the member's changes went through)
    assert [p for r in reports for p in r.problems] == []
    with matcher.member(project.tokens["south"]) as south:
        south.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                           puts=[("s0", CLKS[0].tobytes())])  # fmt: skip
        south.erase("region")
    final = check_data_dir(matcher.data_dir)
    assert final.ok, final.render()


def test_a_project_the_operator_ended_is_said_ended_where_its_indexes_were_left(
    matcher: Matcher,
    project: ProjectTokens,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy whose index was taken before `admin end-project` and its database after holds
    the ended project's standing index, as an ending cut short does. Was: "project region
    expired", though the audit log says the operator ended it (`ended_by`)."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    change(matcher, project, "first", 0, 10)
    ending = ["admin", "end-project", "--project", "region", "--reason", "ISA ended",
              "--server", matcher.target, "--yes"]  # fmt: skip
    copy = copied_apart(matcher.data_dir, tmp_path / "copy", "index",
                        lambda: main(ending))  # fmt: skip
    capsys.readouterr()
    left = [p for p in check_data_dir(copy).problems if "still holds its standing" in p]
    assert left == [
        "project region was ended by the operator (admin end-project), but index.sqlite still "
        "holds its standing indexes (10 records): its ending was cut short (the matcher "
        "stopped part-way); start the matcher to complete the ending (it deletes them before "
        "it serves anything)"
    ]
