"""A partner's standing conversion started ahead of its queries (standahead, issue 18 (b);
rpc/twoserver_standahead.py, rpc/twoserver_standstart.py, realtime/twoahead.py): with S1, S2
and the matcher on loopback, an upload converted as it completes with no query, the first
query answered standing (the links by pairs), the matcher's start converting what S1 and S2
hold; a piece 0 without a query that C could not make under the project's rules refused by
S1 (audited); a partner over S1's bound never converted."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import partpath, standing
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import Ahead, Partner
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import ADMIN_TOKEN
from tests.test_twoserver_blocks import KEY, MEMBER_KEY, RULE, THRESHOLD, entries
from tests.test_twoserver_connected import failed_threads as failed_threads  # the fixture
from tests.test_twoserver_query import held_by, person_csv
from tests.test_twoserver_standing import (
    Roles,
    _later,
    ask,
    combiner_conversions,
    held_at_piece_1,
    older_roles,
    query,
    uploaded,
)
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_life import until

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")


def audited(folder: Path, role: str, action: str) -> list[dict[str, object]]:
    """A running role's audit entries of `action` (its data dir `folder`)."""
    kept = RoleAudit(folder, role)
    try:
        return [dict(e.detail) for e in kept.log.entries() if e.action == action]
    finally:
        kept.close()


def made(world: Any) -> list[int]:
    return [world.roles[r].service.standing.conversions for r in ROLES]


def queries_dealt(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A 1 for each query C deals standing against a conversion it holds (`standdeal._query`)."""
    queried, query_deal = [], standdeal._query

    def deal(*args: Any) -> Any:
        queried.append(1)
        return query_deal(*args)

    monkeypatch.setattr(standdeal, "_query", deal)
    return queried


def held_at_c(world: Any) -> None:
    """C's conversion made (kept, its end told), not only counted at S1 and S2: S1 answers C
    the last piece after it counts it, so a query sent at once could find none at C yet."""
    assert combiner_conversions(world).idle(600)  # (a bound on a hang, not a timing)


def test_an_upload_is_converted_with_no_query_and_the_first_query_goes_standing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the matcher: north's and south's uploads are converted at S1 and S2 as they
    complete, before any query (one `twoserver.standing_started` each, no query's), and the
    first query is dealt standing (no conversion started by it), finding what by pairs finds.
    A matcher started again (its conversions' seeds gone) converts what S1 and S2 hold at its
    start, once the hour since the last such start is over (AHEAD_SECONDS; 0 here), and its
    first query goes standing too."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)  # 42 records a member: standing
    monkeypatch.setattr(standing, "CHUNK", 16)  # each conversion in 3 pieces
    queried = queries_dealt(monkeypatch)
    with uploaded(tmp_path) as (world, project, south, secret):
        until(lambda: made(world) == [2, 2])  # north and south, one at a time
        held_at_c(world)
        for role in ROLES:
            started = audited(tmp_path / f"{role}-data", role, "twoserver.standing_started")
            assert len(started) == 2 and not any(e["query"] for e in started)
            whole = audited(tmp_path / f"{role}-data", role, "twoserver.standing")
            asked = sorted(str(e["members"][0]) for e in whole)  # type: ignore[index]
            assert asked == ["", ""]  # started by no query
        answers = []
        for k, path in enumerate(("shape", "pairs", "shape")):
            monkeypatch.setattr(partpath, "PATH", path)
            people = person_csv(south, sorted(south.truth)[:2], tmp_path / f"q{k}.csv")
            capsys.readouterr()
            assert query(world, project, south, people, secret) == 0
            answers.append(held_by(json.loads(capsys.readouterr().out)))
            if k == 0:  # the first query: standing, converting nothing more
                assert queried and made(world) == [2, 2]
        assert answers == [[["south"], ["south"]]] * 3
        assert made(world) == [2, 2]
        for role in ROLES:
            started = audited(tmp_path / f"{role}-data", role, "twoserver.standing_started")
            assert len(started) == 2  # no query started one
        # The matcher started again on the same set-up: it converts both at its start.
        monkeypatch.setattr(standcache, "AHEAD_SECONDS", 0.0)
        setup = world.server.realtime.two_server
        world.server.stop(grace=None)
        world.server = create_server("127.0.0.1:0", world.data_dir, ADMIN_TOKEN, workers=2,
                                     two_server=setup, clock=world.clock)  # fmt: skip
        until(lambda: made(world) == [4, 4])
        held_at_c(world)
        del queried[:]
        people = person_csv(south, sorted(south.truth)[2:4], tmp_path / "again.csv")
        assert query(world, project, south, people, secret) == 0
        assert queried and made(world) == [4, 4]


def test_with_the_switch_off_an_upload_converts_nothing_and_the_first_query_starts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --no-two-server-convert-ahead` (`combiner_setup`'s `convert_ahead` False):
    north's and south's uploads complete and S1 and S2 convert nothing, C's `Ahead` queues
    nothing; the first query is answered by pairs, starting south's conversion (one
    `twoserver.standing_started`, a query's), and the next goes standing against it."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)  # 42 records a member: standing
    monkeypatch.setattr(standing, "CHUNK", 16)
    queued: list[tuple[str, bool]] = []  # (the partner, whether `Ahead` works on it)
    convert = Ahead.convert

    def spy(self: Ahead, partner: Partner) -> None:
        convert(self, partner)
        queued.append((partner.name.split("/")[1], self._working))

    monkeypatch.setattr(Ahead, "convert", spy)
    queried = queries_dealt(monkeypatch)
    with uploaded(tmp_path, ahead=False) as (world, project, south, secret):
        assert world.server.realtime.two_server.converts_ahead is False
        # north's and south's uploads handed to `Ahead`, which is off: nothing worked on
        assert sorted(queued) == [("north", False), ("south", False)]
        assert made(world) == [0, 0]
        for role in ROLES:
            assert audited(tmp_path / f"{role}-data", role, "twoserver.standing_started") == []
        for k in range(2):
            people = person_csv(south, sorted(south.truth)[2 * k : 2 * k + 2],
                                tmp_path / f"q{k}.csv")  # fmt: skip
            capsys.readouterr()
            assert query(world, project, south, people, secret) == 0
            assert held_by(json.loads(capsys.readouterr().out)) == [["south"], ["south"]]
            if k == 0:  # by pairs, its conversion of south started and then made
                assert not queried
                held_at_c(world)
                assert made(world) == [1, 1]
        assert queried and made(world) == [1, 1]  # the second: standing
        for role in ROLES:
            (started,) = audited(tmp_path / f"{role}-data", role, "twoserver.standing_started")
            assert started["query"]


def test_a_partner_over_s1s_bound_is_never_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1 blocking a one-record query against the partners (an exhaustive cap of 1,000
    pairs, no smaller-member cap), S1 and S2 older than `HoldsReply`'s bounds (so C, not
    told S1's, deals piece 0; since capsfirst a C told it deals nothing:
    tests/test_twoserver_standing_caps.py): C's starts ahead of the queries are refused by
    S1, each audited `twoserver.refused`, and S1 and S2 convert nothing."""
    older_roles(monkeypatch)
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)
    with uploaded(tmp_path, (1_000, 0)) as (world, _, _, _):
        folder = tmp_path / "s1-data"

        def refused() -> list[dict[str, object]]:
            return [e for e in audited(folder, "s1", "twoserver.refused")
                    if "never compared whole" in str(e["reason"])]  # fmt: skip

        until(lambda: len(refused()) == 2)  # north's and south's
        assert made(world) == [0, 0]
        for role in ROLES:
            assert audited(tmp_path / f"{role}-data", role, "twoserver.standing_started") == []


def _ahead(roles: Roles, conversions: Conversions) -> Ahead:
    """C's `Ahead` over S1 and S2 on loopback (channels of its own each start)."""

    def servers(names: list[str], records: list[int], bits: list[int]) -> RemoteServers:
        return RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                             f"127.0.0.1:{roles.running['s2'].port}", KEY, names, records,
                             bits)  # fmt: skip

    return Ahead(servers, lambda: conversions)


def test_a_partner_converted_ahead_answers_the_first_query_standing_with_the_pairs_links(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """C's `Ahead` converts south (piece 0 naming it alone) with no query; the first query
    against it is dealt standing (C's `queried`), its links, buckets and rows those by
    pairs, and nothing more is converted."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    ahead = _ahead(roles, conversions)
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.idle(600)  # (a bound on a hang, not a timing)
    assert ahead.started == 1 and conversions.converted == 1 and roles.conversions() == [1, 1]
    first, _ = ask(roles, shares["query"], shares["south"], conversions)
    assert conversions.queried == 1 and conversions.converted == 1
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    assert first == by_pairs and {row for row, _, _ in first} == {0, 1, 2}
    for role in ROLES:
        (whole,) = entries(tmp_path, role, "twoserver.standing")
        assert whole["members"] == ["", "south"] and whole["records"] == 90


def _piece0(rule: tuple[float, float, float] = RULE, **fields: Any) -> pb.BlockDeal:
    """A piece 0 naming the partner south alone, as C's `Ahead` sends it, with `fields`."""
    head = pb.BlockDeal(member_b="south", records_b=90, cutoffs=[THRESHOLD],
                        rule=pb.ScoreRule(gap=rule[0], offset=rule[1], reach=rule[2]),
                        standing="s" * 24, standing_pieces=3)  # fmt: skip
    return _later(head, 0, **fields)


def test_a_piece_0_without_a_query_that_c_could_not_make_is_refused_by_s1(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """S1 checks a piece 0 naming no query against what it knows: refused PERMISSION_DENIED
    (audited `twoserver.refused`) at cut-offs no run has, under another rule than the
    upload's, naming a query's records as the partner, and a second start of the same upload
    within AHEAD_SECONDS (the first, C's, converted it); a shape other than the partner
    alone is INVALID_ARGUMENT. S1 and S2 convert nothing more."""
    roles.upload("south", shares["south"])
    roles.upload("q@0123456789", shares["query"])  # a query's records (its name's "@")
    conversions = Conversions()
    ahead = _ahead(roles, conversions)
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.idle(600) and roles.conversions() == [1, 1]
    s1 = pb_grpc.TwoServerBlockingStub(
        channel := grpc.insecure_channel(f"127.0.0.1:{roles.running['s1'].port}")
    )
    wrongs = {
        "buckets: [0.9]; the circuit's cut-offs are fixed": _piece0(cutoffs=[THRESHOLD, 0.9]),
        "a standing part is under the upload's rule": _piece0((RULE[0] + 0.5, *RULE[1:])),
        "is a query's or watch's records": _piece0(
            member_b="q@0123456789", records_b=3, standing_pieces=1
        ),
        "converted without a query": _piece0(),
        "names its partner (member_b) alone": _piece0(member_a="", part=1),
    }
    try:
        for match, m in wrongs.items():
            with pytest.raises(grpc.RpcError) as got:
                s1.PrepareBlocks(m, metadata=(("authorization", f"Bearer {KEY}"),))
            code = grpc.StatusCode.INVALID_ARGUMENT if "alone" in match else (
                grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
            assert got.value.code() == code and match in str(got.value.details()), (
                got.value.details()
            )
    finally:
        channel.close()
    refused = entries(tmp_path, "s1", "twoserver.refused")
    assert len(refused) == 4 and all(e["members"][0] == "" for e in refused)  # type: ignore[index]
    started = entries(tmp_path, "s1", "twoserver.standing_started")
    assert roles.conversions() == [1, 1] and len(started) == 1


def test_c_converts_one_partner_at_a_time_and_leaves_one_a_query_converted(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query's conversion being made, C's `Ahead` waits for it (one at a time), then finds
    south converted and starts nothing; a partner C already holds is not converted again."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    gate = held_at_piece_1(monkeypatch)
    ask(roles, shares["query"], shares["south"], conversions, settle=False)  # piece 0: a query's
    ahead = _ahead(roles, conversions)
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert not ahead.idle(0.2)  # waiting for the query's conversion
    gate.set()
    assert ahead.idle(600)
    assert ahead.started == 0 and conversions.converted == 1 and roles.conversions() == [1, 1]
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.idle(600) and ahead.started == 0 and roles.conversions() == [1, 1]


def test_c_ahead_takes_a_querys_conversion_made_after_it_looked_and_converts_none_again(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """C's `Ahead` finds south not converted; before its admission a query converts south
    (piece 0 within it, the rest in the background, made). `Ahead` then deals nothing,
    declines nothing, and tells a watch waiting on it that C holds south's conversion.
    (Before: S1 and S2 converted south a second time.)"""
    roles.upload("south", shares["south"])

    class QueriedMeanwhile(Conversions):
        armed = True

        def learn(self, remote: RemoteServers) -> None:  # (`_made` asks the bounds first)
            if self.armed and threading.current_thread().name == "standing-ahead":
                self.armed = False
                ask(roles, shares["query"], shares["south"], self)  # (settled: made)
            super().learn(remote)

    conversions, told = QueriedMeanwhile(), list[tuple[bool, str]]()
    ahead = _ahead(roles, conversions)
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.when_made("south", lambda held, why: told.append((held, why)))
    assert ahead.idle(600) and not conversions.armed  # (a bound on a hang, not a timing)
    assert (ahead.started, ahead.declined, conversions.declined) == (0, 0, 0)
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    assert told == [(True, "")]


def test_a_members_new_upload_takes_the_room_of_its_earlier_ones_conversion() -> None:
    """C's admission counts a member's earlier upload (another tag: S1 and S2 dropped its
    conversion when the new upload replaced it) as the same partner: the new upload's
    conversion is admitted in its place, not refused for want of room beside it for an
    hour (so a re-upload converted at its upload is not sent by pairs)."""
    kept = Conversions(clock=lambda: 0.0)
    kept.told(6_000, 6_000)
    old = ("p/south/aaaaaaaa", 90, (64, 64), (0.8,), b"")
    assert kept.admit(old, 5_000) == ""
    kept.put(old, ("id-old", None), 5_000)  # type: ignore[arg-type]
    kept.end()
    new = ("p/south/bbbbbbbb", 87, (64, 64), (0.8,), b"")
    assert kept.admit(new, 5_000) == "" and not kept.holds(old)
    kept.end()
    other = ("p/north/cccccccc", 90, (64, 64), (0.8,), b"")
    kept.put(new, ("id-new", None), 5_000)  # type: ignore[arg-type]
    assert "do not fit beside the 5,000" in kept.admit(other, 5_000)


@pytest.mark.parametrize("when", ["before", "as it starts", "as it asks the bounds"])
def test_a_conversion_ahead_that_meets_the_matchers_stop_ends_in_one_line_and_keeps_nothing(
    when: str, roles: Roles, shares: dict[str, client.SharedUpload],
    caplog: pytest.LogCaptureFixture, failed_threads: list[BaseException],
) -> None:  # fmt: skip
    """C's `Ahead` over the matcher's kept channels (`combiner_setup`'s `servers`), the
    matcher's stop (its set-up's `close`, then `disconnect`) run before the partner is
    queued, just as its conversion starts, or as it asks S1's and S2's bounds: one line
    saying the matcher stopped (before, a ValueError's traceback: "Cannot invoke RPC on
    closed channel!"), nothing started, failed or converted at S1 and S2."""
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup

    roles.upload("south", shares["south"])
    setup = combiner_setup(*(f"127.0.0.1:{roles.running[r].port}" for r in ROLES), KEY,
                           MEMBER_KEY)  # fmt: skip
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    held = setup.servers(["south"], [90], list(bits))
    conversions, stopped = held.conversions, []
    held.close()

    def stop() -> None:
        stopped.append(1)
        setup.close()
        setup.disconnect()

    def servers(names: list[str], records: list[int], widths: list[int]) -> RemoteServers:
        if when == "as it starts":  # (past its look whether the matcher stops)
            stop()
        return setup.servers(names, records, widths)

    if when == "before":  # (queued after the stop: the set-up's conversions, stopped)
        stop()
        conversions = setup.servers(["south"], [90], list(bits)).conversions
    learn = conversions.learn
    if when == "as it asks the bounds":
        conversions.learn = lambda remote: (stop(), learn(remote))[1]  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="blindmatch.matcher.twoserver")
    caplog.clear()  # (the upload's lines)
    ahead = Ahead(servers, lambda: conversions)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.idle(600) and stopped == [1]  # (a bound on a hang, not a timing)
    said = [r for r in caplog.records if "south's upload" in r.getMessage()]
    assert [r.getMessage() for r in said] == [
        "south's upload not converted ahead of its queries: the matcher stopped"
    ]
    assert not any(r.exc_info for r in caplog.records)
    counts = (ahead.started, ahead.refused, ahead.failed, ahead.declined, ahead.skipped)
    assert counts == (0, 0, 0, 0, 0) and conversions.converted == 0
    assert roles.conversions() == [0, 0] and failed_threads == []
