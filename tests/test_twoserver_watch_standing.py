"""A two-server watch's comparison of a partner's upload that C converts ahead of the queries
(watchstand, issue 18 (b); realtime/twowatch.py `_deferred`, rpc/twoserver_standahead.py
`when_made`): with S1, S2 and the matcher on loopback, the comparison waits for the
conversion and goes standing, telling the watch what by pairs tells it; by pairs where the
conversion fails, where the partner asks for its next upload's ticket first, and where the
switch is off; a watch that ends during the wait is told nothing, and S1 and S2 forget its
records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import ticket
from blindmatch.matcher import errors
from blindmatch.matcher.core import partpath, standing
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import PERSON_SCHEMA
from tests.test_twoserver_standing import uploaded
from tests.test_twoserver_standing_life import until
from tests.test_twoserver_standing_start import made, queries_dealt
from tests.test_twoserver_watch import Watching, watched_names

pytestmark = pytest.mark.server
ROWS = list(range(12))  # north's records watched (south holds some of them)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """42 records a member go standing, each conversion in 3 pieces."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)


class Gate:
    """South's conversions' piece 1 held back while `held` (until `open`), and cut there
    where `cut` (the conversion fails)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held, self.cut, self.gate = False, False, threading.Event()
        dealt = standdeal._deal

        def deal(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
            if self.held and m.standing_piece == 1 and "/south/" in m.member_b:
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


def upload_south(world: Any, project: Any, folder: Path) -> None:
    assert world.cli("upload", str(folder / "south.encoded"), "--project", "ruled", "--quiet",
                     token=project.tokens["south"]) == 0  # fmt: skip


def conversions(world: Any) -> Any:
    """C's conversions (the set-up's, as its queries' servers carry them)."""
    servers = world.server.realtime.two_server.servers([], [], [])
    servers.close()  # (the set-up's kept channels stay open)
    return servers.conversions


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
        assert len(watches._waits) == 1 and watches.compared == compared and not watch.events
        gate.open()
        until(lambda: watches.compared == compared + 1)
        assert told(world, watch, before) and watches.stood == 0 and not queried
        assert conversions(world).failed == 1 and not watches._waits
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
        assert len(watches._waits) == 1
        with MatcherClient(world.target, project.tokens["south"]) as south:
            ticket(south, "ruled")
        until(lambda: watches.compared == compared + 1)
        assert told(world, watch, before) and watches.stood == 0 and not watches._waits
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
    assert len(watches._waits) == 1
    watch.close()  # (until its records are forgotten at S1 and S2)
    assert watched_names(world) == {"s1": [], "s2": []}
    gate.open()
    until(lambda: not watches._waits and made(world) == [3, 3])
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
            assert not watches._waits
            until(lambda: watches.compared == compared + 1)
            assert told(world, watch, before) and watches.stood == 0 and not queried
            assert made(world) == [0, 0]
        finally:
            watch.close()
