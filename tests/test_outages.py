"""Queries the matcher could not answer (refused UNAVAILABLE) during an outage: one audit
entry a window of a member's user and purpose, not one fsynced entry an attempt, and every
refusal still counted, in the member's row and its user's share (matcher/realtime/querylog.py,
matcher/core/volume.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.volume import volume_report
from blindmatch.matcher.domain import QUERY, UNANSWERED, QueryRecord
from blindmatch.matcher.realtime.querylog import OUTAGE_WINDOW, QueryLog
from blindmatch.matcher.storage.index_store import IndexStore

DOWN = UNANSWERED + "look-up server 10.0.0.2:50061 is not answering"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(t: float, user: str, purpose: str = "fraud check") -> QueryRecord:
    return QueryRecord(t, "trial", "north", QUERY, purpose, 3, refused=DOWN, user=user)


def test_a_retrying_client_writes_one_audit_entry_an_outage_window_and_every_refusal_counts(
    tmp_path: Path,
) -> None:
    clock = Clock()
    written: list[list[audit.Event]] = []

    def sink(events: Sequence[audit.Event]) -> None:
        written.append(list(events))

    store = IndexStore(tmp_path)
    log = QueryLog(store, audit_sink=sink, clock=clock)
    try:
        for _ in range(5):  # alice's client retries through the outage
            clock.now += 1
            log.record_unanswered(refused(clock.now, "alice"))
        assert [[e.action for e in w] for w in written] == [["query.refused"]]  # the first
        first = written[0][0]
        assert first.user == "alice" and first.detail["refused"] == DOWN
        assert "count" not in first.detail
        clock.now += 1  # the servers are back: alice's next query is answered
        answered = QueryRecord(clock.now, "trial", "north", QUERY, "fraud check", 3,
                               records_with_hits=1, user="alice")  # fmt: skip
        log.record_all([answered])
        summary, query = written[1]
        assert (summary.action, query.action) == ("query.refused", "query")
        assert summary.user == "alice" and summary.purpose == "fraud check"
        assert summary.detail["count"] == 4 and summary.detail["records"] == 12
        assert summary.detail["first"] == 1002.0 and summary.detail["last"] == 1005.0
        assert summary.detail["refused"] == DOWN
        # bob: two refusals in a window, then one after it (a new window, audited at once,
        # with the old window's count before it)
        written.clear()
        for dt in (1, 1, OUTAGE_WINDOW + 1):
            clock.now += dt
            log.record_unanswered(refused(clock.now, "bob"))
        assert [[(e.action, e.detail.get("count")) for e in w] for w in written] == [
            [("query.refused", None)],
            [("query.refused", 1), ("query.refused", None)],
        ]
        clock.now += 1
        log.record_unanswered(refused(clock.now, "bob"))  # counted in the open window
        log.record_unanswered(refused(clock.now, "", "audit"))  # the member's own token
        written.clear()
    finally:
        log.close()  # the matcher stopping: the open window's count is audited
    assert [(e.user, e.detail.get("count")) for w in written for e in w] == [("bob", 1)]
    entries = store.logged_queries(0.0, "trial")
    assert sum(e.refused.startswith(UNANSWERED) for e in entries) == 10  # each one
    (north,) = volume_report(entries, ["north"], {}, 24)
    assert north.unanswered == 10 and north.queries == 1
    users = {u.user: u for u in north.users}
    assert (users["alice"].unanswered, users["alice"].queries) == (5, 1)
    assert (users["bob"].unanswered, users["bob"].queries) == (4, 0)
    assert not north.flags
    store.close()


def test_a_users_unanswered_queries_are_in_its_own_share() -> None:
    entries = [refused(1.0, "carol"), refused(2.0, "carol"), refused(3.0, "")]
    (north,) = volume_report(entries, ["north"], {}, 24)
    assert north.unanswered == 3
    (carol,) = north.users
    assert (carol.user, carol.unanswered, carol.queries, carol.refused) == ("carol", 2, 0, 0)


def test_a_watch_refused_where_watching_is_off_is_reported_as_such_not_as_bad_input() -> None:
    """`admin query-report` said a watch refused where the operator does not allow watching
    was "refused for a bad token or bad input (FAILED_PRECONDITION 1)" (before 2026-12-06):
    it is a refusal of its own, said as such (a user's share named)."""
    from blindmatch.matcher.rpc.refusals import Refusals

    got: list[QueryRecord] = []
    refusals = Refusals(sink=got.extend)
    off = "watching is not allowed in project 'trial'; the operator allows it with ..."
    for rpc, status, message, user in (
        ("Watch", "FAILED_PRECONDITION", off, ""),
        ("Watch", "FAILED_PRECONDITION", off, "pc-1"),
        ("Watch", "FAILED_PRECONDITION", off, "pc-1"),
        ("Watch", "FAILED_PRECONDITION", "clks: another schema's fingerprint", ""),
    ):
        refusals.note(
            method=f"/blindmatch.Matcher/{rpc}", status=status, message=message,
            project="trial", member="north", peer="ipv4:127.0.0.1:1", user=user,
        )  # fmt: skip
    refusals.flush()
    (north,) = volume_report(got, ["north"], {}, 24)
    assert north.flags == (
        "1 request refused for a bad token or bad input (FAILED_PRECONDITION 1)",
        "3 watches refused: watching is not allowed in this project (`admin query-limits "
        "--allow-watch`); by user pc-1 2",
    )
    assert north.users == ()  # pc-1 refused nothing else: named in the flag alone
