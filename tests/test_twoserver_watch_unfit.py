"""A two-server watch's comparison waiting for its partner's conversion ahead of the queries
(watchunfit, issue 18; realtime/twowait.py, rpc/twoserver_standahead.py `when_made`) goes by
pairs as soon as C knows it will not hold that conversion, where only dealing shows it: a
later piece failing (the conversion dropped half-made), no room beside the partners used
recently at its turn, the matcher's stop; not after the give-up's calls to S1 and S2 or the
wait's cap. With S1, S2 and the matcher on loopback, the cap 600 s (each wait below a bound
on a hang, not a timing): the comparison is sent once, and one log line says why it went by
pairs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import STOPPED, Partner
from blindmatch.matcher.rpc.twoserver_standcache import kept_bytes
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import PERSON_SCHEMA
from tests.test_twoserver_blocks import RULE, THRESHOLD
from tests.test_twoserver_standing import Roles, uploaded
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_caps import SHIPPED
from tests.test_twoserver_standing_life import until
from tests.test_twoserver_standing_start import _ahead, made
from tests.test_twoserver_watch_standing import (
    Gate,
    ahead_of,
    conversions,
    notified,
    told,
    upload_south,
    watching,
)
from tests.test_twoserver_watch_standing import small as small  # the fixture
from tests.twoserver_world import EXPORTS

pytestmark = pytest.mark.server
CAP = 600.0  # `serve --two-server-watch-wait-seconds`: never reached here


def by_pairs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines saying why a watch's comparison went by pairs, its conversion not held."""
    return [r.getMessage() for r in caplog.records if "will not be held" in r.getMessage()]


def test_a_watch_goes_by_pairs_as_its_partners_conversion_fails_half_made_not_after_its_give_up(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """South's conversion cut at piece 1 (its exchange with S2), the give-up's calls to S1
    and S2 that follow held (as servers slow to answer `standing_drop` hold them,
    DROP_SECONDS each): the watch's comparison goes by pairs as the piece fails, while the
    give-up is still held, once, the log saying why. (Before: only after the give-up.)"""
    gate, dropping, drop = Gate(monkeypatch), threading.Event(), threading.Event()
    give_up = standdeal.give_up

    def held(remote: Any, m: Any) -> None:
        dropping.set()
        assert drop.wait(600)  # (a bound on a hang, not a timing)
        give_up(remote, m)

    monkeypatch.setattr(standdeal, "give_up", held)
    with uploaded(tmp_path, watch_wait=CAP) as (world, project, _, _):
        until(lambda: made(world) == [2, 2])
        watches = world.server.realtime.two_watches
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            gate.held = gate.cut = True
            compared = watches.compared
            caplog.set_level(logging.INFO, "blindmatch.matcher.realtime")
            upload_south(world, project, tmp_path)
            assert len(watches.waits) == 1 and not watch.events
            gate.open()
            try:
                until(lambda: watches.compared == compared + 1)
                assert dropping.wait(600) and not drop.is_set()  # (its give-up still held)
            finally:
                drop.set()
            assert told(world, watch, before) and watches.stood == 0
            assert conversions(world).idle(600) and conversions(world).failed == 1
            assert watches.compared == compared + 1 and not watches.waits
            assert (watches.waits.not_made, watches.waits.gave_up) == (1, 0)
            assert by_pairs(caplog) == [
                "ruled/south's upload compared with the two-server watches by pairs: its "
                "conversion ahead of the queries will not be held: it stopped half-made: "
                "S2 (the test): the piece's exchange cut"
            ]
        finally:
            watch.close()


def test_a_watch_queued_behind_a_conversion_goes_by_pairs_once_its_partner_finds_no_room(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """S1's `--standing-bytes` holds two partners of 42 records, not three: west's upload of
    42 fits alone (not unfit: the watch waits for it, queued behind north's new upload's
    conversion, held), and at its turn finds no room beside north's and south's, used within
    the hour (`Conversions.admit`, what only dealing shows): the watch's comparison goes by
    pairs then, once, the log saying why; north's conversion made, west's not."""
    room = 2 * kept_bytes(42, SHIPPED, mask=False) + kept_bytes(42, SHIPPED, mask=False) // 2
    gate = Gate(monkeypatch, member="north")
    with uploaded(tmp_path, most={"s1": room}, watch_wait=CAP) as (world, project, _, secret):
        until(lambda: made(world) == [2, 2])
        export = write_exports(tmp_path / "west", seed=5, size=120)[EXPORTS["north"]]
        west = tmp_path / "west.encoded"  # (42 records: north's people)
        assert main(["encode", str(export.csv), "--schema", str(PERSON_SCHEMA),
                     "--secret-file", str(secret), "--mapping", str(export.mapping),
                     "--out", str(west), "--two-server", "--quiet"]) == 0  # fmt: skip
        watches, ahead = world.server.realtime.two_watches, ahead_of(world)
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            gate.held, compared, declined = True, watches.compared, ahead.declined
            caplog.set_level(logging.INFO, "blindmatch.matcher.realtime")
            upload_south(world, project, tmp_path, "north")  # (its conversion held)
            assert gate.at.wait(600)  # (a bound on a hang, not a timing)
            upload_south(world, project, tmp_path, "west", encoded=west)
            assert len(watches.waits) == 1 and watches.compared == compared
            gate.open()
            until(lambda: watches.compared == compared + 1)
            assert told(world, watch, before) and watches.stood == 0
            assert conversions(world).idle(600) and ahead.idle(600)
            assert made(world) == [3, 3] and ahead.declined == declined + 1
            assert watches.compared == compared + 1 and watches.waits.not_made == 1
            [why] = by_pairs(caplog)
            assert "bytes do not fit beside the" in why, why
            assert why.startswith(
                "ruled/west's upload compared with the two-server watches by pairs: its "
                "conversion ahead of the queries will not be held: its "
            )
        finally:
            watch.close()


def test_the_matchers_stop_tells_the_waiters_of_the_conversion_being_made_at_once(
    roles: Roles, shares: dict[str, client.SharedUpload], small: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """C's `Ahead` converting south over S1 and S2 on loopback, its piece 1 held: a caller
    waiting for it (`when_made`, as a watch's comparison does) is told at the matcher's stop
    (`Ahead.close`) at once, not held, why (the matcher stopped), the piece still held; the
    conversion then stopped (`Conversions.close`) tells it nothing again. (Before: told only
    as the conversion being made ended, after its give-up.)"""
    roles.upload("south", shares["south"])
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    at, go, told = threading.Event(), threading.Event(), []
    dealt = standdeal._deal

    def deal(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 1:
            at.set()
            assert go.wait(600)  # (a bound on a hang, not a timing)
        return dealt(remote, conversions, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", deal)
    conversions = Conversions()
    ahead = _ahead(roles, conversions)
    ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
    try:
        assert ahead.when_made("south", lambda held, why: told.append((held, why)))
        assert at.wait(600)  # (a bound on a hang, not a timing)
        ahead.close()
        assert told == [(False, STOPPED)]
    finally:
        go.set()
    assert conversions.close(600) and ahead.idle(600)
    assert told == [(False, STOPPED)] and ahead.started == 1
    assert conversions.cancelled == 1 and conversions.failed == 0  # (stopconv: the stop's)
