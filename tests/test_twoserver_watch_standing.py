"""A two-server watch's comparison of a partner's upload that C converts ahead of the queries
(watchstand, issue 18 (b); realtime/twowatch.py `_deferred`, realtime/twowait.py,
rpc/twoserver_standahead.py `when_made`): with S1, S2 and the matcher on loopback, the
comparison waits for the conversion and goes standing, telling the watch what by pairs tells
it; by pairs where the conversion fails, where the partner asks for its next upload's ticket
first, and where the switch is off; a watch that ends during the wait is told nothing, and S1
and S2 forget its records. Since watchcap, by pairs once the wait reaches `serve
--two-server-watch-wait-seconds` (0: at once), the conversion going on, and at once where the
conversion would be turned down as unfit; the option's bad values refused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli import twoserveropts
from blindmatch.cli.app import build_parser, main
from blindmatch.client.encoding import sharing as client
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import ticket
from blindmatch.matcher import errors
from blindmatch.matcher.core import partpath, standing
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS, Rule
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import Partner
from blindmatch.matcher.rpc.twoserver_standcache import kept_bytes
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import PERSON_SCHEMA, dead_port
from tests.test_twoserver_blocks import RULE, THRESHOLD
from tests.test_twoserver_kept_channels import key_files
from tests.test_twoserver_standing import Roles, uploaded
from tests.test_twoserver_standing import combiner_conversions as conversions
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_caps import SHIPPED
from tests.test_twoserver_standing_life import until
from tests.test_twoserver_standing_start import _ahead, made, queries_dealt
from tests.test_twoserver_watch import Watching, watched_names
from tests.twoserver_world import EXPORTS

pytestmark = pytest.mark.server
ROWS = list(range(12))  # north's records watched (south holds some of them)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """42 records a member go standing, each conversion in 3 pieces."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)


class Gate:
    """`member`'s conversions' piece 1 held back while `held` (until `open`), and cut there
    where `cut` (the conversion fails)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, member: str = "south") -> None:
        self.held, self.cut, self.gate = False, False, threading.Event()
        self.at = threading.Event()  # a piece held there
        dealt = standdeal._deal

        def deal(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
            if self.held and m.standing_piece == 1 and f"/{member}/" in m.member_b:
                self.at.set()
                assert self.gate.wait(600)  # (a bound on a hang, not a timing)
                if self.cut:
                    raise errors.Unavailable("S2 (the test): the piece's exchange cut")
            return dealt(remote, conversions, m, *rest)

        monkeypatch.setattr(standdeal, "_deal", deal)

    def open(self) -> None:
        self.gate.set()


def watching(world: Any, project: Any, folder: Path) -> Watching:
    """North's watch of ROWS of its own records (`folder`: the encoded folders'), keyless."""
    with world.operator() as op:
        op.set_query_limits("ruled", allow_watch=True)
    return Watching(world, project.tokens["north"], folder / "north.encoded", ROWS,
                    project="ruled", schema=PERSON_SCHEMA)  # fmt: skip


def upload_south(world: Any, project: Any, folder: Path, member: str = "south",
                 encoded: Path | None = None) -> None:  # fmt: skip
    """South's upload of its folder again (`member`'s; `encoded`: another folder)."""
    encoded = encoded or folder / f"{member}.encoded"
    assert world.cli("upload", str(encoded), "--project", "ruled", "--quiet",
                     token=project.tokens[member]) == 0  # fmt: skip


def notified(world: Any) -> int:
    with world.operator() as op:
        return sum(e["action"] == "watch.notify" for e in op.audit("ruled"))


def told(world: Any, watch: Watching, before: int) -> list[tuple[str, int | None]]:
    """The watch's events once every notification recorded since `before` reached it."""
    until(lambda: len(watch.events) == notified(world) - before)
    assert watch.error is None
    return sorted((e.partner, e.index) for e in watch.events)


@pytest.fixture
def world_up(tmp_path: Path, small: None) -> Iterator[tuple[Any, Any]]:
    """`uploaded`'s world (north's and south's uploads converted ahead): (world, project)."""
    with uploaded(tmp_path) as (world, project, _, _):
        until(lambda: made(world) == [2, 2])
        yield world, project


def test_a_watch_goes_standing_once_its_partner_is_converted_telling_what_pairs_tell(
    tmp_path: Path, world_up: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """South's upload compared with north's watch by pairs (PATH "pairs": not converted),
    then south's same records uploaded again: converted ahead, and the watch's comparison
    waits for it and is dealt standing (C's `_query`, S1's and S2's audit naming the watch),
    telling the watch the same events."""
    world, project = world_up
    watches = world.server.realtime.two_watches
    queried = queries_dealt(monkeypatch)
    events = {}
    for path in ("pairs", "shape"):
        monkeypatch.setattr(partpath, "PATH", path)
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            compared, stood = watches.compared, watches.stood
            upload_south(world, project, tmp_path)
            until(lambda: watches.compared == compared + 1)  # noqa: B023
            events[path] = told(world, watch, before)
            assert bool(queried) == (path == "shape")  # dealt standing, or not
            assert watches.stood == stood + (path == "shape")
        finally:
            watch.close()
    assert events["pairs"] and len(events["pairs"]) < len(ROWS)  # some held by south, not all
    assert events["shape"] == events["pairs"]
    assert made(world) == [3, 3]  # south's second upload converted (ahead), none by the watch
    assert watched_names(world) == {"s1": [], "s2": []}


def test_a_watch_whose_partners_conversion_fails_goes_by_pairs_after_it(
    tmp_path: Path, world_up: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """South's conversion held at piece 1: the watch's comparison waits (nothing told, not
    compared); the piece cut, the conversion fails and the comparison goes by pairs."""
    world, project = world_up
    watches, gate = world.server.realtime.two_watches, Gate(monkeypatch)
    queried = queries_dealt(monkeypatch)
    watch, before = watching(world, project, tmp_path), notified(world)
    try:
        gate.held = gate.cut = True
        compared = watches.compared
        upload_south(world, project, tmp_path)
        assert len(watches.waits) == 1 and watches.compared == compared and not watch.events
        gate.open()
        until(lambda: watches.compared == compared + 1)
        assert told(world, watch, before) and watches.stood == 0 and not queried
        assert conversions(world).failed == 1 and not watches.waits
    finally:
        watch.close()


def test_a_partners_next_ticket_sends_the_waiting_comparison_by_pairs(
    tmp_path: Path, world_up: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """South's conversion held: south asks for its next upload's ticket (its shares would
    replace the upload at S1 and S2), so the watch's comparison goes by pairs at once; the
    conversion's end later compares nothing again."""
    world, project = world_up
    watches, gate = world.server.realtime.two_watches, Gate(monkeypatch)
    watch, before = watching(world, project, tmp_path), notified(world)
    try:
        gate.held = True
        compared = watches.compared
        upload_south(world, project, tmp_path)
        assert len(watches.waits) == 1
        with MatcherClient(world.target, project.tokens["south"]) as south:
            ticket(south, "ruled")
        until(lambda: watches.compared == compared + 1)
        assert told(world, watch, before) and watches.stood == 0 and not watches.waits
        gate.open()
        until(lambda: made(world) == [3, 3])
        assert conversions(world).idle(600)
        assert watches.compared == compared + 1
    finally:
        watch.close()


def test_a_watch_that_ends_during_the_wait_is_told_nothing_and_forgotten(
    tmp_path: Path, world_up: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, project = world_up
    watches, gate = world.server.realtime.two_watches, Gate(monkeypatch)
    watch, before = watching(world, project, tmp_path), notified(world)
    gate.held = True
    compared = watches.compared
    upload_south(world, project, tmp_path)
    assert len(watches.waits) == 1
    watch.close()  # (until its records are forgotten at S1 and S2)
    assert watched_names(world) == {"s1": [], "s2": []}
    gate.open()
    until(lambda: not watches.waits and made(world) == [3, 3])
    assert conversions(world).idle(600)
    assert watches.compared == compared and not watch.events and notified(world) == before
    assert watched_names(world) == {"s1": [], "s2": []}


def test_with_the_switch_off_a_watch_is_compared_by_pairs_at_once(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --no-two-server-convert-ahead`: nothing converted, nothing waits; the watch's
    comparison goes by pairs as the upload completes."""
    queried = queries_dealt(monkeypatch)
    with uploaded(tmp_path, ahead=False) as (world, project, _, _):
        watches = world.server.realtime.two_watches
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            compared = watches.compared
            upload_south(world, project, tmp_path)
            assert not watches.waits
            until(lambda: watches.compared == compared + 1)
            assert told(world, watch, before) and watches.stood == 0 and not queried
            assert made(world) == [0, 0]
        finally:
            watch.close()


@pytest.mark.parametrize("wait", [0.05, 0.0], ids=["past-the-cap", "never"])
def test_a_watch_goes_by_pairs_once_its_wait_reaches_the_cap_the_conversion_going_on(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, wait: float,
) -> None:  # fmt: skip
    """`serve --two-server-watch-wait-seconds` (watchcap): south's conversion held at piece
    1 (a conversion long, or queued behind others); the watch's comparison goes by pairs once
    the cap passed (at once at 0: no wait), its events told while the conversion is still
    held, one log line saying it stopped waiting; the conversion then goes on and ends held,
    comparing nothing again."""
    gate = Gate(monkeypatch)
    with uploaded(tmp_path, watch_wait=wait) as (world, project, _, _):
        until(lambda: made(world) == [2, 2])
        watches = world.server.realtime.two_watches
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            gate.held, compared = True, watches.compared
            caplog.set_level(logging.INFO, "blindmatch.matcher.realtime")
            upload_south(world, project, tmp_path)
            if not wait:
                assert not watches.waits
            until(lambda: watches.compared == compared + 1)
            assert told(world, watch, before) and watches.stood == 0
            assert not gate.gate.is_set() and not conversions(world).idle(0)  # still held
            assert not watches.waits and watches.waits.gave_up == (wait > 0)
            gave_up = [r.getMessage() for r in caplog.records if "not made within" in
                       r.getMessage()]  # fmt: skip
            assert gave_up == ([
                f"ruled/south's upload compared with the two-server watches by pairs: its "
                f"conversion ahead of the queries was not made within {wait:g} s "
                "(--two-server-watch-wait-seconds); the conversion goes on for the queries"
            ] if wait else [])  # fmt: skip
            gate.open()
            until(lambda: made(world) == [3, 3])
            assert conversions(world).idle(600) and conversions(world).failed == 0
            assert watches.compared == compared + 1 and watches.stood == 0
        finally:
            watch.close()


def test_an_unfit_uploads_watch_goes_by_pairs_without_waiting_behind_queued_conversions(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1's `--standing-bytes` holds north's and south's 42 records (converted) but not
    south's new upload of some 200: that conversion would be turned down as unfit
    (`Conversions.unfit`), so the watch's comparison goes by pairs at once, though north's
    own new upload's conversion, queued first, is held. (Before: the watch waited behind
    north's conversion, then went by pairs once the worker skipped south's.)"""
    small = kept_bytes(42, SHIPPED, mask=False)
    room = 2 * small + small // 2  # (two partners of 42 records without [M_B])
    gate = Gate(monkeypatch, member="north")
    with uploaded(tmp_path, most={"s1": room}) as (world, project, _, secret):
        until(lambda: made(world) == [2, 2])
        bigger = tmp_path / "bigger"
        export = write_exports(bigger, seed=5, size=600)[EXPORTS["south"]]
        assert main(["encode", str(export.csv), "--schema", str(PERSON_SCHEMA),
                     "--secret-file", str(secret), "--mapping", str(export.mapping),
                     "--out", str(bigger / "south.encoded"), "--two-server",
                     "--quiet"]) == 0  # fmt: skip
        records = read_encoded(bigger / "south.encoded").record_count
        assert kept_bytes(records, SHIPPED, mask=False) > room
        watches, ahead = world.server.realtime.two_watches, ahead_of(world)
        watch, before = watching(world, project, tmp_path), notified(world)
        try:
            gate.held, compared, skipped = True, watches.compared, ahead.skipped
            upload_south(world, project, tmp_path, "north")  # (its conversion held)
            assert gate.at.wait(600)  # (a bound on a hang, not a timing)
            upload_south(world, project, tmp_path, encoded=bigger / "south.encoded")
            assert not watches.waits and ahead.skipped == skipped + 1
            until(lambda: watches.compared == compared + 1)
            told(world, watch, before)
            assert watches.stood == 0 and not gate.gate.is_set()
            gate.open()
            until(lambda: made(world) == [3, 3])  # north's; south's not converted
            assert conversions(world).idle(600) and watches.compared == compared + 1
        finally:
            watch.close()


def test_a_watch_asks_s1s_and_s2s_bounds_where_c_knows_none_and_waits_for_no_unfit_one(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """South's conversion waiting for a query's (nothing dealt, S1's and S2's bounds not yet
    asked) and over S2's `--standing-bytes` even without [M_B]: a watch asking to wait for
    it (`when_made`) has C ask S1 and S2 their bounds, and is told no (its comparison goes by
    pairs at once); south's conversion, its turn come, is skipped as before."""
    roles.upload("south", shares["south"])
    bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    roles.running["s2"].service.standing.most = kept_bytes(90, bits, mask=False) - 1
    conversions = Conversions()
    ahead = _ahead(roles, conversions)
    assert conversions.admit(("a query's", 1, bits, (), b""), 1) == ""  # (being made)
    try:
        ahead.convert(Partner("south", 90, bits, THRESHOLD, Rule(*RULE)))
        assert not conversions.learned()  # (C knows nothing yet)
        assert not ahead.when_made("south", lambda held, why: None)
        assert conversions.learned()
        assert conversions.budget == kept_bytes(90, bits, mask=False) - 1
    finally:
        conversions.end()
    assert ahead.idle(600)  # (a bound on a hang, not a timing)
    assert ahead.skipped == 1 and ahead.started == 0 and roles.conversions() == [0, 0]


def ahead_of(world: Any) -> Any:
    """C's conversions ahead of the queries (`Ahead`, whose `when_made` the set-up holds)."""
    return world.server.realtime.two_server.when_converted.__self__


def test_serve_refuses_a_bad_watch_wait_and_hands_a_good_one_to_the_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--two-server-watch-wait-seconds`: negative, not a number, not finite: exit 2 naming
    the flag; without --two-server-s1/-s2 refused as the other two-server options are; a
    good one reaches the set-up (default WATCH_WAIT_SECONDS)."""
    keys = key_files(tmp_path)
    serve = ["serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"]
    with dead_port() as s1, dead_port() as s2:  # nothing there all the while
        two = ["--two-server-s1", f"127.0.0.1:{s1}", "--two-server-s2",
               f"127.0.0.1:{s2}", "--two-server-key-file", str(keys[0]),
               "--two-server-member-key-file", str(keys[1])]  # fmt: skip
        flag = "--two-server-watch-wait-seconds"
        for bad in ("-1", "nan", "inf"):
            assert main([*serve, *two, flag, bad]) == 2
            assert f"Error: {flag} {bad}: 0 or more seconds" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exited:
            main([*serve, *two, flag, "soon"])
        assert exited.value.code == 2
        assert f"argument {flag}: invalid float value: 'soon'" in capsys.readouterr().err
        assert main([*serve, flag, "30"]) == 2
        assert f"Error: {flag}: only with --two-server-s1 and -s2" in capsys.readouterr().err
        assert not (tmp_path / "data").exists()  # refused before anything was made
        for given, wait in (([], WATCH_WAIT_SECONDS), ([flag, "0"], 0.0), ([flag, "2.5"], 2.5)):
            setup = twoserveropts.serve_setup(build_parser().parse_args([*serve, *two, *given]))
            assert setup is not None
            try:
                assert setup.watch_wait == wait, given
            finally:  # as the matcher's stop: its probe of S1 and S2 stopped, the channels closed
                setup.close()
                setup.disconnect()
