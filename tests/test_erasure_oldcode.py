"""A data dir an erasure was cut short in by a matcher from before erasure intents: found from
the audit log, reported by `admin check`, completed at the next start (storage/erasure_log.py).

The old code's state is made on disk: the matcher killed right after the erasure's transaction
(`BLINDMATCH_CRASH_AT=erase.logged`), then the erasure's intent deleted, as the old code never
wrote one. An index the member built again after such an erasure is its own, and kept.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.faults import Server
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from blindmatch.client import MatcherClient
from blindmatch.client.errors import BlindmatchError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.storage.crashpoint import ENV
from blindmatch.matcher.storage.erasure_log import FOUND_IN_LOG
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import short_check_grace
from tests.test_erasure_check import completed, index_of, puts, serve, started_with_north_indexed
from tests.test_erasure_crash import PUTS, admin_check, audit_actions, served
from tests.test_hardening import found_in_data_dir

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)

__all__ = ["served"]  # (the fixture, shared with that module)


def forget_the_intent(data_dir: Path) -> None:
    """What the old code left: the same rows, but no erasure intent."""
    with closing(sqlite3.connect(data_dir / "blindmatch.sqlite")) as db:
        assert db.execute("DELETE FROM erasure_intents").rowcount == 1
        db.commit()


@pytest.mark.slow
def test_an_erasure_cut_short_by_an_old_matcher_is_found_from_the_log_and_completed(
    served: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("p", ["north", "south"]).tokens
    uploaded = population(1, 20, 0.0, seed=62)[0]
    with MatcherClient(served.target, tokens["north"]) as north:
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=PUTS)
        north.upload("p", write(uploaded, tmp_path / "north.encoded"))
    erased = [clk for _, clk in PUTS] + [row.tobytes() for row in uploaded.clks]
    served.stop()
    monkeypatch.setenv(ENV, "erase.logged")
    served.start()
    with (
        MatcherClient(served.target, tokens["north"], retry=NO_RETRY) as north,
        pytest.raises(BlindmatchError),
    ):
        north.erase("p")
    assert served.process is not None and served.process.wait(timeout=60) == -9
    served.kill()
    monkeypatch.delenv(ENV)
    forget_the_intent(served.data_dir)
    left = found_in_data_dir(served.data_dir, erased)
    assert any(f.startswith("index.sqlite") for f in left)
    assert any(f.startswith("clks/") for f in left)

    checked = admin_check(served.data_dir)
    assert checked.returncode != 0, checked.stdout
    said = (checked.stdout + checked.stderr).splitlines()
    (finding,) = [line for line in said if "p/north erased" in line]
    assert "40 records of its standing index" in finding and "1 of its upload files" in finding
    assert "from before erasure intents" in finding and "found from the audit log" in finding
    assert "start the matcher to complete the erasure" in finding

    served.start()
    try:
        assert found_in_data_dir(served.data_dir, erased) == []
        with MatcherClient(served.target, tokens["south"]) as south:
            answer = south.query("p", [clk for _, clk in PUTS[:5]], clk_bits=CLK_BITS,
                                 fingerprint=FINGERPRINT, purpose="case-1")  # fmt: skip
        assert [hits for hits in answer.results if hits] == []
    finally:
        served.stop()
    ((_, project, member, detail),) = [
        e for e in audit_actions(served.data_dir) if e[0] == "erase.complete"
    ]
    assert (project, member, detail["index_records"], detail["upload_files"]) == (
        "p", "north", 40, 1)  # fmt: skip
    assert detail["why"] == FOUND_IN_LOG
    checked = admin_check(served.data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_index_left_by_an_old_erasure_is_a_problem_until_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_check_grace(monkeypatch)  # (the matcher stopped: nothing in progress to wait for)
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:  # the transaction, no more: the old code's state with its index kept
        server.store.erase_member("p", "north")
        with server.store.db.tx() as tx:
            tx.execute("DELETE FROM erasure_intents")
    finally:
        server.stop(grace=None)
    (problem,) = check_data_dir(data_dir).problems
    assert problem.startswith("p/north erased its data (audit entry ")
    assert "10 records of its standing index" in problem and "upload files" not in problem
    server = serve(data_dir)
    try:
        assert index_of(server, tokens["north"]) == {}
    finally:
        server.stop(grace=None)
    assert [(p, m, d["index_records"], d["why"]) for p, m, d in completed(data_dir)] == [
        ("p", "north", 10, FOUND_IN_LOG)
    ]
    assert check_data_dir(data_dir).problems == []
    serve(data_dir).stop(grace=None)  # (found once: nothing is left to find again)
    assert len(completed(data_dir)) == 1


def test_an_index_built_again_after_an_old_erasure_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:
        server.store.erase_member("p", "north")  # its index never deleted, no intent
        with server.store.db.tx() as tx:
            tx.execute("DELETE FROM erasure_intents")
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=puts(20, 5))  # fmt: skip
    finally:
        server.stop(grace=None)
    assert check_data_dir(data_dir).problems == []  # a change after the erasure: its index
    server = serve(data_dir)
    try:
        assert len(index_of(server, tokens["north"])) == 15
    finally:
        server.stop(grace=None)
    assert completed(data_dir) == []
