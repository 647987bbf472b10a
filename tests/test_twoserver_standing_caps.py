"""C knows S1's and S2's standing bounds before it deals (capsfirst, issue 18 (b);
rpc/twoserver_holds.py `bounds`, rpc/twoserver_conversions.py `Conversions.learn`/`unfit`):
`Holds` naming no upload says each role's `--standing-bytes` and, at S1, the largest partner
a one-record query is compared whole against; a matcher whose S1 has a small bound deals
each partner's piece 0 once, without [M_B]; a partner over S1's `--query-whole-pairs` is
dealt nothing ahead of its queries (S1 refuses nothing). A role older than the fields (it
refuses a `Holds` naming none) leaves C as before: tests/test_twoserver_standing.py
`older_roles`, used by the fallback's tests. Reuses tests/test_twoserver_standing.py's
fixtures (S1, S2 and the matcher on loopback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import exhaustive, partpath, standing, tickets
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import Partner
from blindmatch.matcher.rpc.twoserver_standcache import kept_bytes
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.test_twoserver_blocks import KEY, RULE, THRESHOLD
from tests.test_twoserver_standing import Roles, uploaded
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_life import until
from tests.test_twoserver_standing_start import ROLES, _ahead, audited, made

pytestmark = pytest.mark.server
SHIPPED = (1024, 1024)  # the shipped schema's two CLKs (its two-server upload's widths)


def test_whole_records_is_where_s1s_caps_stop_comparing_a_one_record_query_whole() -> None:
    """`exhaustive.whole_records` is the largest partner `run_cap` compares a one-record
    query whole against, under each kind of S1's caps (0 where none is)."""
    query = "p/" + tickets.QUERY_MARK.join(["a", "0"]) + "/t"
    assert tickets.is_query(query)
    for caps in [(1_000, 0, 100), (1_000, 64_000_000, 30), (16_000_000, 64_000_000, 1_040_000),
                 (16_000_000, 0, 1_040_000), (0, 64_000_000, 1_040_000), (1, 1, 0)]:  # fmt: skip
        n = exhaustive.whole_records(*caps)
        assert n == 0 or exhaustive.run_cap([query, "p/b/t"], caps[0], [1, n], *caps[1:])
        assert not exhaustive.run_cap([query, "p/b/t"], caps[0], [1, n + 1], *caps[1:])


def test_holds_naming_no_upload_says_each_roles_bounds(roles: Roles) -> None:
    """S1 and S2 answer `Holds` naming no upload (the combiner's key) with their
    `--standing-bytes` and, S1 alone, the largest partner a one-record query is compared
    whole against under its caps; a `Holds` naming uploads says them too."""
    roles.running["s2"].service.standing.most = 5_000
    s1 = roles.running["s1"].service
    s1.exhaustive, s1.small_member, s1.query_whole = 1_000, 64_000_000, 200
    said = {}
    for role, stub in (("s1", pb_grpc.TwoServerBlockingStub),
                       ("s2", pb_grpc.TwoServerSharesStub)):  # fmt: skip
        with grpc.insecure_channel(f"127.0.0.1:{roles.running[role].port}") as channel:
            key = (("authorization", f"Bearer {KEY}"),)
            said[role] = stub(channel).Holds(pb.HoldsRequest(), metadata=key)
            named = stub(channel).Holds(pb.HoldsRequest(names=["p/a/t"]), metadata=key)
            assert list(named.held) == [False]
            assert named.standing_bytes == said[role].standing_bytes
    assert said["s1"].standing_bytes == 4 << 30 and said["s2"].standing_bytes == 5_000
    assert said["s1"].query_whole_records == 64_000 and not list(said["s1"].held)
    assert not said["s2"].HasField("query_whole_records")


def test_a_matcher_whose_s1_has_a_small_bound_deals_each_piece_0_once_without_m_b(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1's `--standing-bytes` holds north's and south's 42 records each only without
    [M_B]: the matcher, having asked S1 and S2 their bounds, deals each conversion's piece 0
    once (C's deals of a piece 0, counted), without [M_B]: one `twoserver.standing_started`
    a partner at each server, none with `mask`. (Before: C, knowing no bound, dealt north's
    with [M_B], S1 refused it `standing_room`, unaudited, and C dealt it again without:
    three piece 0s for two partners.)"""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)
    dealt, convert = [], standdeal.convert

    def counted(*args: Any) -> Any:
        dealt.append(args[-1])  # (`without_mask`)
        return convert(*args)

    monkeypatch.setattr(standdeal, "convert", counted)
    small = kept_bytes(42, SHIPPED, mask=False)
    most = 2 * small + small // 2
    assert kept_bytes(42, SHIPPED, mask=True) > most
    with uploaded(tmp_path, most={"s1": most}) as (world, _, _, _):
        until(lambda: made(world) == [2, 2])
        for role in ROLES:
            started = audited(tmp_path / f"{role}-data", role, "twoserver.standing_started")
            assert [e["mask"] for e in started] == [False, False], started
            assert world.roles[role].service.standing.bytes_kept() == 2 * small
        assert dealt == [True, True]  # north's piece 0 and south's, each once, without [M_B]
        assert audited(tmp_path / "s1-data", "s1", "twoserver.refused") == []


def test_a_partner_over_s1s_query_whole_pairs_is_dealt_nothing_ahead_of_its_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """S1's `--query-whole-pairs` 30 (its exhaustive cap 1,000, its smaller-member cap 10,000):
    a one-record query against north's or south's 42 records is blocked, so the matcher,
    told S1's bound, deals no piece 0 for either (logged at info, once each): S1 refuses and
    audits nothing, S1 and S2 start nothing. (Before: C dealt piece 0 of each, and S1
    refused each, `twoserver.refused`.)"""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)
    caplog.set_level(logging.INFO, logger="blindmatch.matcher.twoserver")

    def skipped() -> list[str]:
        said = [r.getMessage() for r in caplog.records]
        return [m for m in said if "not converted ahead" in m and "(up to 30:" in m]

    with uploaded(tmp_path, (1_000, 10_000, 30)) as (world, _, _, _):
        until(lambda: len(skipped()) == 2)  # north's and south's
        assert made(world) == [0, 0]
        for role in ROLES:
            folder = tmp_path / f"{role}-data"
            assert audited(folder, role, "twoserver.standing_started") == []
            assert audited(folder, role, "twoserver.refused") == []


def test_a_partner_over_the_servers_room_even_without_m_b_is_dealt_nothing_ahead(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """S2's `--standing-bytes` under south's 90 records even without [M_B]: C's `Ahead`,
    told it, deals nothing for south (`skipped`; its first query converts it, alone), and
    S1 and S2 start nothing. (Before: C converted it ahead, kept alone over S2's bound,
    pushing out whatever else S1 and S2 held.)"""
    roles.upload("south", shares["south"])
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    roles.running["s2"].service.standing.most = kept_bytes(90, bits, mask=False) - 1
    conversions = Conversions()
    ahead = _ahead(roles, conversions)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    assert ahead.idle(600)  # (a bound on a hang, not a timing)
    assert ahead.skipped == 1 and ahead.started == 0 and ahead.refused == 0
    assert conversions.budget == kept_bytes(90, bits, mask=False) - 1
    assert roles.conversions() == [0, 0]
