"""Two-server refusals on the operator's query report (`admin query-report`), labelled by
whose doing they are (matcher/rpc/refusals.py `note`, matcher/core/volume.py): a query whose
records S1 and S2 no longer hold (S1 or S2 restarted between their upload and the query), a
watch ended for the same, and a watch ended by S1's caps are not the member's bad input. A real
matcher, S1 and S2 on loopback; S1 drops the records as its restart would. Also the plurals of
the two-server refusals and of limits of one (matcher/domain.py `counted`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.remote.model import MemberVolume
from blindmatch.matcher import errors
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.querylimit import Limit, QueryCounter, QueryLimits
from blindmatch.matcher.core.quota import QueryMeter
from blindmatch.matcher.domain import (
    NO_RULE,
    OVER_S1_CAPS,
    RECORDS_LOST,
    REFUSED_REQUEST,
    WATCH_OVER_S1_CAPS,
    WATCH_RECORDS_LOST,
    QueryQuota,
    QueryRecord,
    counted,
)
from blindmatch.matcher.errors import Unauthenticated
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc.refusals import Refusals, Strangers
from blindmatch.matcher.usecases import twojournal
from blindmatch.protos import blindmatch_pb2 as pb
from tests.test_twoserver_project import World, create, world  # noqa: F401
from tests.test_twoserver_query import ask, person_csv
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401
from tests.test_twoserver_watch_keys import Opened, opening, upload  # noqa: F401

pytestmark = pytest.mark.server


def drop_held(world: World) -> None:  # noqa: F811
    """S1 forgets every query's and watch's records (`@` in their name), as a restart on its
    data dir does (it holds them in memory only)."""
    s1 = world.roles["s1"].service
    with s1.lock:
        for name in [n for n in s1.held if "@" in n]:
            del s1.held[name]


def report(world: World) -> dict[str, MemberVolume]:  # noqa: F811
    with world.operator() as op:
        return {v.member: v for v in op.query_report("shares", hours=24)}


def test_a_query_whose_records_s1_lost_is_not_the_members_bad_input_on_the_report(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S1 restarted between a query's upload to it and the query: refused "the query's
    records are not at S1 and S2 ... send them again under a fresh query ticket", which the
    report counted as the member's bad input ("1 request refused for a bad token or bad
    input (FAILED_PRECONDITION 1)"). It is flagged apart, no quota used."""
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", per_day=2)  # the two records, once
    for name in ("north", "south"):
        upload(world, members[name][1], two.tokens[name])
    s1 = world.roles["s1"].service
    received = s1.upload

    def lost(parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        receipt = received(parts, vouched)
        drop_held(world)
        return receipt

    monkeypatch.setattr(s1, "upload", lost)
    south = members["south"][0]
    people = person_csv(south, sorted(south.truth)[:2], world.folder / "two.csv")
    assert ask(world, "shares", two.tokens["north"], people, south) == 3
    north = report(world)["north"]
    assert north.flags == [
        "1 query refused: the records were no longer at S1 and S2 when searched (S1 or S2 "
        "restarted since they were sent?): not the member's doing, no quota used"
    ]
    assert (north.queries, north.records, north.refused) == (0, 0, 0)
    assert [u.bad_requests for u in north.users] == [0] * len(north.users)
    monkeypatch.undo()  # S1 keeps them again: the same query answered within the day of 2
    assert ask(world, "shares", two.tokens["north"], people, south) == 0
    assert ask(world, "shares", two.tokens["north"], people, south) != 0  # (the day is used)


def test_a_watch_whose_records_s1_lost_ends_off_the_members_bad_input(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    """A watch ended at a partner's upload because S1 no longer held its records (S1
    restarted) was counted as the member's bad input (FAILED_PRECONDITION)."""
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    watch = Watching(world, two.tokens["north"], members["south"][1], [0, 1])
    try:
        drop_held(world)
        upload(world, members["west"][1], two.tokens["west"])
        watch.thread.join(30)
        assert "the watch's records are no longer at S1 and S2" in str(watch.error)
    finally:
        watch.close()
    flags = report(world)["north"].flags
    assert flags == [
        "1 watch ended: the records were no longer at S1 and S2 at a partner's upload (S1 or "
        "S2 restarted since the opening?): not the member's doing"
    ]


def test_a_watch_s1s_caps_end_is_labelled_a_watch_on_the_report(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watch ended by S1's caps under `--query-band-keys refuse` (S1's doing, not the
    member's) was flagged "1 query refused by S1 over its caps": a watch's end, said so."""
    opened = opening(0)  # S1 blocks every pair
    monkeypatch.setattr(opened.s1, "query_band_keys", "refuse")
    upload(world, opened.folder, opened.south)
    until(lambda: opened.watch.error is not None)
    assert "--query-band-keys allow" in str(opened.watch.error)
    assert report(world)["north"].flags == [
        "1 watch ended by S1 over its caps, taking no band keys (its --query-band-keys "
        "refuse: S1's operator's setting, not the member's input)"
    ]


def test_refusals_label_the_two_server_refusals_by_whose_doing_they_are() -> None:
    """What `note` stores for each (no servers: the words the matcher sends)."""
    stored: list[QueryRecord] = []
    refusals = Refusals(stored.extend)
    gone = "the query's records are not at S1 and S2 (S1 holds no upload of 'x'): send them"
    ended = f"the watch's records are no longer at S1 and S2, which hold ... ({gone})"
    caps = "this query of 2 records against south (9 records) is over S1's --query-band-keys refuse"
    for method, message in [
        ("Query", gone),
        ("QueryStream", gone),
        ("Watch", ended),
        ("Query", caps),
        ("Watch", caps),
        ("Query", "clk_bits: other"),
    ]:
        refusals.note(
            method=f"/blindmatch.Matcher/{method}",
            status="FAILED_PRECONDITION",
            message=message,
            project="shares",
            member="north",
            peer="ipv4:1",
        )
    refusals.flush()
    assert {(r.refused, r.records) for r in stored} == {
        (RECORDS_LOST, 2),
        (WATCH_RECORDS_LOST, 1),
        (OVER_S1_CAPS, 1),
        (WATCH_OVER_S1_CAPS, 1),
        ("FAILED_PRECONDITION", 1),
    }
    assert all(r.kind == REFUSED_REQUEST for r in stored)


def test_the_two_server_refusals_count_their_records_and_pairs_in_the_right_number() -> None:
    """Was "an upload of 1 records", "(1 records)"; counted thousands grouped as before."""
    said = exhaustive.keys_refused(1, 1, 1, 0, exhaustive.SHIPPED_SMALL_PAIRS)
    assert said.startswith("this query of 1 record against an upload of 1 record is over")
    said = exhaustive.keys_refused(2, 20_000, 1, 0, 0)
    assert said.startswith("this query of 2 records against an upload of 20,000 records is")
    partner = twopartner.Partner("south", "p/south/u", 1, (1024,), NO_RULE)
    told = str(twopartner.keys_refused("x is over S1's bound", 1, partner))
    assert told == "this query of 1 record against south (1 record) is over S1's bound"
    assert twojournal._count(1) == "1 pair of members"
    assert twojournal._count(1_500) == "1,500 pairs of members"
    assert counted(1_040_000, "record") == "1,040,000 records"


def test_a_limit_of_one_record_or_one_call_is_said_in_the_singular() -> None:
    """Was "may query 1 records per minute", "at most 1 query records a hour" (then "1 query
    record a hour": its article, leftovers), "1 calls from this address were refused"
    (matcher/core/quota.py, querylimit.py, rpc/refusals.py)."""
    with pytest.raises(errors.ResourceExhausted) as over:
        QueryMeter().take("p", "north", 2, QueryQuota(per_minute=1, per_day=1), 0.0)
    assert "may query 1 record per minute" in str(over.value)
    assert "split it into queries of at most 1 record," in str(over.value)
    counter = QueryCounter(QueryLimits(Limit(1, "hour"), Limit(10, "hour")), "S1")
    with pytest.raises(errors.ResourceExhausted) as over:
        counter.admit("p/north@a1/a1", "p", "north", 2, 1_000_000.0)
    assert "S1 evaluates at most 1 query record an hour" in str(over.value)
    assert "queries of at most 1 record," in str(over.value)
    strangers = Strangers(1)
    strangers.refused("ipv4:10.0.0.9")
    with pytest.raises(Unauthenticated, match=r"^1 call from this address was refused for its"):
        strangers.admit("ipv4:10.0.0.9", b"digest")
