"""An erasure blanks the member's logged queries' purposes and users, and keeps the rest.

The query log (`index.sqlite`, `query_log`) holds per query the member, the time, the purpose
(a case reference: about one of the member's data subjects) and the named user who asked (an
officer's name), and the counts. An erasure blanks the purpose and the user of each query the
member logged until then; the times and counts stay (the member's quota is re-counted from
them at a restart: erasing must not reset it), as do the operator's query limits for the
member (a setting about the member, no personal data: erasing must not lift a stricter
limit), and the hash-chained audit log (its `query` entries are the record of consultation).
A data dir whose erasures left purposes behind (cut short, or made before this) fails
`admin check`, and the next start blanks them.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT
from blindmatch.client import MatcherClient
from blindmatch.matcher.storage.index_store import ERASED
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import ADMIN_TOKEN, db_rows, short_check_grace
from tests.test_erasure_check import puts, serve, started_with_north_indexed

pytestmark = pytest.mark.server

CASE = "case 2024/117 (R v Doe)"


def logged(data_dir: Path) -> list[tuple[str, str, int, str]]:
    """(member, purpose, records, user) of each logged query, oldest first."""
    with closing(sqlite3.connect(data_dir / "index.sqlite")) as db:
        return db.execute(
            "SELECT member, purpose, records, user FROM query_log ORDER BY time"
        ).fetchall()


def limits(data_dir: Path) -> list[tuple[str, int]]:
    with closing(sqlite3.connect(data_dir / "index.sqlite")) as db:
        return db.execute("SELECT member, per_day FROM query_limits ORDER BY member").fetchall()


def queried(server_port: int, token: str, n: int, purpose: str) -> None:
    with MatcherClient(f"127.0.0.1:{server_port}", token) as member:
        member.query("p", [clk for _, clk in puts(0, n)], clk_bits=CLK_BITS,
                     fingerprint=FINGERPRINT, purpose=purpose)  # fmt: skip


def test_an_erasure_blanks_its_logged_purposes_and_keeps_counts_limits_and_audit(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            op.set_query_limits("p", member="south", per_day=50)
        queried(server.port, tokens["south"], 3, CASE)
        queried(server.port, tokens["north"], 2, "north's own case")
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["south"]) as south:
            assert south.erase("p").pending == ()
        queried(server.port, tokens["south"], 4, "after the erasure")
        server.realtime.query_log.flush()  # (written off the request path)
        assert logged(data_dir) == [
            ("south", ERASED, 3, ERASED),  # blanked: its times and counts kept
            ("north", "north's own case", 2, ""),  # a partner's: untouched
            ("south", "after the erasure", 4, ""),  # asked after it: its own again
        ]
        assert limits(data_dir) == [("south", 50)]  # the operator's limit stays
    finally:
        server.stop(grace=None)
    audited = [r[6] for r in db_rows(data_dir, "audit") if r[3] == "query" and r[5] == "south"]
    assert CASE in audited  # the audit log keeps the record of consultation
    assert check_data_dir(data_dir).problems == []
    server = serve(data_dir)  # the quota is still re-counted from the kept counts
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            (south,) = [v for v in op.query_report("p") if v.member == "south"]
        assert (south.queries, south.records) == (2, 7)
    finally:
        server.stop(grace=None)
    index_bytes = b"".join(f.read_bytes() for f in data_dir.glob("index.sqlite*"))
    assert CASE.encode() not in index_bytes  # zeroed, not left in a free page or the WAL


def test_purposes_an_earlier_erasure_left_fail_the_check_and_the_next_start_blanks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_check_grace(monkeypatch)  # (the matcher stopped: nothing in progress to wait for)
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    try:
        queried(server.port, tokens["south"], 3, CASE)
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["south"]) as south:
            south.erase("p")
    finally:
        server.stop(grace=None)
    with closing(sqlite3.connect(data_dir / "index.sqlite")) as db:  # as a matcher before this
        db.execute("UPDATE query_log SET purpose=?, user='' WHERE member='south'", (CASE,))
        db.commit()
    (finding,) = check_data_dir(data_dir).problems
    assert finding.startswith("p/south erased its data, but the query log (index.sqlite) still")
    assert "of 1 of its queries from before" in finding and "start the matcher" in finding
    serve(data_dir).stop(grace=None)
    assert logged(data_dir) == [("south", ERASED, 3, ERASED)]
    assert check_data_dir(data_dir).problems == []
